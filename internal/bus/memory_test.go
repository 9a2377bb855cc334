package bus_test

import (
	"context"
	"testing"
	"time"

	"github.com/backchannel/backchannel/internal/bus"
	"github.com/backchannel/backchannel/internal/bus/bustest"
)

func TestMemoryBus(t *testing.T) {
	bustest.Run(t, func(t *testing.T) bus.Bus {
		return bus.NewMemoryWith(bus.MemoryOptions{RetryDelay: 5 * time.Millisecond})
	})
}

func TestMemoryTrimsAcknowledged(t *testing.T) {
	b := bus.NewMemoryWith(bus.MemoryOptions{Retention: time.Millisecond})
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan int, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = b.Subscribe(ctx, "t", "g", func(_ context.Context, batch []bus.Message) error {
			got <- len(batch)
			return nil
		})
	}()
	for i := 0; i < 10; i++ {
		time.Sleep(2 * time.Millisecond) // older than the retention by the next ack
		if err := b.Publish(ctx, "t", []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	for n < 10 {
		n += <-got
	}
	deadline := time.Now().Add(2 * time.Second)
	for b.Retained("t") > 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if r := b.Retained("t"); r > 1 {
		t.Fatalf("%d acknowledged messages still retained", r)
	}
	cancel()
	<-done
}

func TestMemoryMaxLen(t *testing.T) {
	b := bus.NewMemoryWith(bus.MemoryOptions{MaxLen: 5})
	defer b.Close()
	for i := 0; i < 20; i++ {
		_ = b.Publish(context.Background(), "t", []byte{byte(i)})
	}
	if r := b.Retained("t"); r != 5 {
		t.Fatalf("retained %d, want 5", r)
	}
}

func TestTopicNames(t *testing.T) {
	if bus.Downward("c1") == bus.Downward("c2") || bus.Downward("all") == bus.Broadcast || bus.Downward("up") == bus.Upward {
		t.Fatal("topic names collide")
	}
}
