package bus_test

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/backchannel/backchannel/internal/bus"
	"github.com/backchannel/backchannel/internal/redistest"
)

// Close stops everything the bus started, subscriptions included.
func TestRedisCloseLeavesNoGoroutines(t *testing.T) {
	srv := redistest.Start(t)
	before := runtime.NumGoroutine()
	b, err := bus.NewRedis(bus.RedisOptions{Addr: srv.Addr(), Block: 50 * time.Millisecond, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 2)
	for _, topic := range []string{"a", "b"} {
		go func() {
			done <- b.Subscribe(context.Background(), topic, "g", func(context.Context, []bus.Message) error { return nil })
		}()
	}
	for range 100 {
		_ = b.Publish(context.Background(), "a", []byte("x"))
	}
	time.Sleep(100 * time.Millisecond)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := <-done; err != bus.ErrClosed {
			t.Fatalf("Subscribe returned %v after Close", err)
		}
	}
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines after Close, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}
