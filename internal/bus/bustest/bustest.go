// Package bustest is the conformance suite every bus.Bus implementation
// passes: run it from the implementation's tests with a factory that returns
// a fresh, empty bus.
package bustest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/backchannel/backchannel/internal/bus"
)

// Run runs the whole suite. newBus must return an empty bus; the suite
// closes it.
func Run(t *testing.T, newBus func(t *testing.T) bus.Bus) {
	tests := []struct {
		name string
		fn   func(*testing.T, bus.Bus)
	}{
		{"PublishBeforeSubscribe", publishBeforeSubscribe},
		{"OrderAndBatches", orderAndBatches},
		{"TopicsAreSeparate", topicsAreSeparate},
		{"EveryGroupGetsEverything", everyGroupGetsEverything},
		{"ConsumersShareAGroup", consumersShareAGroup},
		{"ErrorRedelivers", errorRedelivers},
		{"LeavingConsumerHandsOver", leavingConsumerHandsOver},
		{"ConcurrentPublishers", concurrentPublishers},
		{"CancelAndClose", cancelAndClose},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newBus(t)
			defer b.Close()
			tc.fn(t, b)
		})
	}
}

const waitFor = 5 * time.Second

// collector records what a handler saw.
type collector struct {
	mu      sync.Mutex
	got     []string
	batches int
	changed chan struct{}
}

func newCollector() *collector { return &collector{changed: make(chan struct{}, 1)} }

func (c *collector) handle(_ context.Context, batch []bus.Message) error {
	c.mu.Lock()
	for _, m := range batch {
		c.got = append(c.got, string(m.Data))
	}
	c.batches++
	c.mu.Unlock()
	select {
	case c.changed <- struct{}{}:
	default:
	}
	return nil
}

func (c *collector) snapshot() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.got...)
}

// waitCount waits until the collector holds n messages.
func (c *collector) waitCount(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		if got := c.snapshot(); len(got) >= n {
			return got
		}
		select {
		case <-c.changed:
		case <-deadline:
			t.Fatalf("got %d messages, want %d", len(c.snapshot()), n)
		}
	}
}

// subscribe runs Subscribe in the background and returns a stop function
// that cancels it and waits for it to return.
func subscribe(t *testing.T, b bus.Bus, topic, group string, h bus.Handler) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Subscribe(ctx, topic, group, h) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(waitFor):
				err = errors.New("Subscribe did not return after its context was cancelled")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func publish(t *testing.T, b bus.Bus, topic string, msgs ...string) {
	t.Helper()
	data := make([][]byte, len(msgs))
	for i, m := range msgs {
		data[i] = []byte(m)
	}
	if err := b.Publish(context.Background(), topic, data...); err != nil {
		t.Fatalf("Publish: %v", err)
	}
}

func seq(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = prefix + strconv.Itoa(i)
	}
	return out
}

func wantEqual(t *testing.T, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d messages %v, want %d", len(got), got, len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("message %d is %q, want %q (got %v)", i, got[i], want[i], got)
		}
	}
}

func publishBeforeSubscribe(t *testing.T, b bus.Bus) {
	publish(t, b, "t1", "a", "b")
	c := newCollector()
	subscribe(t, b, "t1", "g", c.handle)
	publish(t, b, "t1", "c")
	wantEqual(t, c.waitCount(t, 3), []string{"a", "b", "c"})
}

func orderAndBatches(t *testing.T, b bus.Bus) {
	c := newCollector()
	var ids []string
	var mu sync.Mutex
	subscribe(t, b, "t1", "g", func(ctx context.Context, batch []bus.Message) error {
		mu.Lock()
		for _, m := range batch {
			ids = append(ids, m.ID)
		}
		mu.Unlock()
		return c.handle(ctx, batch)
	})
	want := seq("m", 1000)
	for i := 0; i < len(want); i += 100 {
		publish(t, b, "t1", want[i:i+100]...)
	}
	wantEqual(t, c.waitCount(t, len(want)), want)
	mu.Lock()
	defer mu.Unlock()
	seen := map[string]bool{}
	for _, id := range ids {
		if id == "" || seen[id] {
			t.Fatalf("message id %q empty or repeated", id)
		}
		seen[id] = true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.batches >= len(want) {
		t.Errorf("%d messages came in %d batches: the bus does not batch", len(want), c.batches)
	}
}

func topicsAreSeparate(t *testing.T, b bus.Bus) {
	c1, c2 := newCollector(), newCollector()
	subscribe(t, b, bus.Downward("c1"), "c1", c1.handle)
	subscribe(t, b, bus.Downward("c2"), "c2", c2.handle)
	publish(t, b, bus.Downward("c1"), "for-c1")
	publish(t, b, bus.Downward("c2"), "for-c2")
	wantEqual(t, c1.waitCount(t, 1), []string{"for-c1"})
	wantEqual(t, c2.waitCount(t, 1), []string{"for-c2"})
	time.Sleep(50 * time.Millisecond)
	wantEqual(t, c1.snapshot(), []string{"for-c1"})
}

func everyGroupGetsEverything(t *testing.T, b bus.Bus) {
	c1, c2 := newCollector(), newCollector()
	subscribe(t, b, bus.Broadcast, "conn-1", c1.handle)
	subscribe(t, b, bus.Broadcast, "conn-2", c2.handle)
	want := seq("x", 50)
	publish(t, b, bus.Broadcast, want...)
	wantEqual(t, c1.waitCount(t, 50), want)
	wantEqual(t, c2.waitCount(t, 50), want)
}

func consumersShareAGroup(t *testing.T, b bus.Bus) {
	c := newCollector()
	var calls [2]atomic.Int32
	for i := range 2 {
		subscribe(t, b, bus.Upward, bus.ApplicationGroup, func(ctx context.Context, batch []bus.Message) error {
			calls[i].Add(1)
			time.Sleep(time.Millisecond) // let the other consumer take a turn
			return c.handle(ctx, batch)
		})
	}
	want := seq("u", 300)
	for _, m := range want {
		publish(t, b, bus.Upward, m)
	}
	got := c.waitCount(t, len(want))
	time.Sleep(50 * time.Millisecond)
	got = c.snapshot()
	seen := map[string]int{}
	for _, m := range got {
		seen[m]++
	}
	for _, m := range want {
		if seen[m] != 1 {
			t.Fatalf("message %s delivered %d times within one group", m, seen[m])
		}
	}
	if calls[0].Load() == 0 && calls[1].Load() == 0 {
		t.Fatal("no consumer was called")
	}
}

func errorRedelivers(t *testing.T, b bus.Bus) {
	c := newCollector()
	var failures atomic.Int32
	subscribe(t, b, "t1", "g", func(ctx context.Context, batch []bus.Message) error {
		for _, m := range batch {
			if string(m.Data) == "poison-once" && failures.Add(1) <= 2 {
				return fmt.Errorf("not now")
			}
		}
		return c.handle(ctx, batch)
	})
	publish(t, b, "t1", "a")
	publish(t, b, "t1", "poison-once")
	publish(t, b, "t1", "b")
	got := c.waitCount(t, 3)
	has := map[string]bool{}
	for _, m := range got {
		has[m] = true
	}
	if !has["a"] || !has["poison-once"] || !has["b"] {
		t.Fatalf("got %v: a refused batch was not redelivered or later ones were lost", got)
	}
	if failures.Load() < 3 {
		t.Fatalf("handler saw the refused message %d times, want at least 3", failures.Load())
	}
}

func leavingConsumerHandsOver(t *testing.T, b bus.Bus) {
	entered := make(chan struct{})
	var once sync.Once
	stop1 := subscribe(t, b, "t1", "g", func(ctx context.Context, batch []bus.Message) error {
		once.Do(func() { close(entered) })
		<-ctx.Done() // never acknowledges; leaves when cancelled
		return ctx.Err()
	})
	publish(t, b, "t1", "orphan")
	select {
	case <-entered:
	case <-time.After(waitFor):
		t.Fatal("first consumer never got the message")
	}
	if err := stop1(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Subscribe returned %v after cancel, want context.Canceled", err)
	}
	c := newCollector()
	subscribe(t, b, "t1", "g", c.handle)
	got := c.waitCount(t, 1)
	if got[0] != "orphan" {
		t.Fatalf("second consumer got %v", got)
	}
}

func concurrentPublishers(t *testing.T, b bus.Bus) {
	c := newCollector()
	subscribe(t, b, "t1", "g", c.handle)
	var wg sync.WaitGroup
	for p := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				if err := b.Publish(context.Background(), "t1", []byte(fmt.Sprintf("p%d-%d", p, i))); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	got := c.waitCount(t, 400)
	// Each publisher's messages arrive in its own order.
	last := map[byte]int{}
	for _, m := range got {
		var p, i int
		fmt.Sscanf(m, "p%d-%d", &p, &i)
		if prev, ok := last[byte(p)]; ok && i <= prev {
			t.Fatalf("publisher %d: %d after %d", p, i, prev)
		}
		last[byte(p)] = i
	}
}

func cancelAndClose(t *testing.T, b bus.Bus) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Subscribe(ctx, "t1", "g", func(context.Context, []bus.Message) error { return nil }) }()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Subscribe returned %v after cancel", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Subscribe ignored its context")
	}
	go func() {
		done <- b.Subscribe(context.Background(), "t1", "g", func(context.Context, []bus.Message) error { return nil })
	}()
	time.Sleep(20 * time.Millisecond)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, bus.ErrClosed) {
			t.Fatalf("Subscribe returned %v after Close, want ErrClosed", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Subscribe did not return after Close")
	}
	if err := b.Publish(context.Background(), "t1", []byte("late")); !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("Publish after Close returned %v", err)
	}
}
