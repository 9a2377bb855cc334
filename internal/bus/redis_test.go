package bus_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/backchannel/backchannel/internal/bus"
	"github.com/backchannel/backchannel/internal/bus/bustest"
	"github.com/backchannel/backchannel/internal/redistest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// flushAll empties the server between subtests.
func flushAll(t testing.TB, addr string) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, DisableIdentity: true})
	defer c.Close()
	if err := c.FlushAll(context.Background()).Err(); err != nil {
		t.Fatalf("FLUSHALL: %v", err)
	}
}

func newRedisBus(t testing.TB, addr string, o bus.RedisOptions) *bus.Redis {
	t.Helper()
	o.Addr = addr
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.RetryDelay == 0 {
		o.RetryDelay = 5 * time.Millisecond
	}
	b, err := bus.NewRedis(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func TestRedisBus(t *testing.T) {
	srv := redistest.Start(t)
	bustest.Run(t, func(t *testing.T) bus.Bus {
		flushAll(t, srv.Addr())
		return newRedisBus(t, srv.Addr(), bus.RedisOptions{Block: 100 * time.Millisecond})
	})
}

// A process that died holding entries (read, never acknowledged) leaves
// them pending; a live consumer of the group claims them after ClaimIdle.
func TestRedisClaimsFromDeadConsumer(t *testing.T) {
	srv := redistest.Start(t)
	b := newRedisBus(t, srv.Addr(), bus.RedisOptions{Block: 50 * time.Millisecond, ClaimIdle: 300 * time.Millisecond, ClaimInterval: 50 * time.Millisecond})
	raw := redis.NewClient(&redis.Options{Addr: srv.Addr(), DisableIdentity: true})
	defer raw.Close()
	ctx := context.Background()
	if err := raw.XGroupCreateMkStream(ctx, "t", "g", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, "t", []byte("a"), []byte("b"), []byte("c")); err != nil {
		t.Fatal(err)
	}
	// The doomed consumer reads everything and dies.
	got, err := raw.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "dead", Streams: []string{"t", ">"}, Count: 10}).Result()
	if err != nil || len(got[0].Messages) != 3 {
		t.Fatalf("dead consumer read %v, %v", got, err)
	}
	start := time.Now()
	rec := newRecord()
	subscribeBG(t, b, "t", "g", rec.handle)
	waitUntil(t, 5*time.Second, "the dead consumer's entries to be claimed", func() bool { return rec.distinct() == 3 })
	if el := time.Since(start); el < 250*time.Millisecond {
		t.Errorf("claimed after %v, before ClaimIdle", el)
	}
	pending, err := raw.XPending(ctx, "t", "g").Result()
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 2*time.Second, "claimed entries to be acknowledged", func() bool {
		pending, err = raw.XPending(ctx, "t", "g").Result()
		return err == nil && pending.Count == 0
	})
}

// A consumer that leaves (context cancelled) without acknowledging hands
// its entries to the group's other consumer at once, well before ClaimIdle.
func TestRedisCancelledConsumerHandsOver(t *testing.T) {
	srv := redistest.Start(t)
	o := bus.RedisOptions{Block: 50 * time.Millisecond, ClaimIdle: time.Minute, ClaimInterval: 100 * time.Millisecond}
	b1 := newRedisBus(t, srv.Addr(), o) // two processes
	b2 := newRedisBus(t, srv.Addr(), o)
	ctx, cancel := context.WithCancel(context.Background())
	entered := make(chan struct{})
	done := make(chan error)
	go func() {
		done <- b1.Subscribe(ctx, "t", "g", func(ctx context.Context, _ []bus.Message) error {
			close(entered)
			<-ctx.Done()
			return ctx.Err()
		})
	}()
	if err := b1.Publish(context.Background(), "t", []byte("held")); err != nil {
		t.Fatal(err)
	}
	<-entered
	rec := newRecord()
	subscribeBG(t, b2, "t", "g", rec.handle)
	time.Sleep(200 * time.Millisecond)
	if rec.distinct() != 0 {
		t.Fatal("second consumer got the entry while the first still held it")
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Subscribe returned %v", err)
	}
	waitUntil(t, 3*time.Second, "the released entry at the other consumer", func() bool { return rec.distinct() == 1 })
}

// An entry written twice (a write whose reply was lost, then retried) is
// handled once, also when the copies go to consumers in different
// processes: the group's record in Redis says it was handled.
func TestRedisDropsRewrittenDuplicates(t *testing.T) {
	srv := redistest.Start(t)
	reg2 := prometheus.NewRegistry()
	o := bus.RedisOptions{Block: 50 * time.Millisecond}
	pub := newRedisBus(t, srv.Addr(), bus.RedisOptions{Origin: "pubA"})
	c1 := newRedisBus(t, srv.Addr(), o)
	o.Metrics = reg2
	c2 := newRedisBus(t, srv.Addr(), o)
	rec := newRecord()
	ctx1, stop1 := context.WithCancel(context.Background())
	done1 := make(chan struct{})
	go func() { defer close(done1); _ = c1.Subscribe(ctx1, "t", "g", rec.handle) }()
	for i := range 5 {
		if err := pub.Publish(context.Background(), "t", []byte(fmt.Sprint("m", i))); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, 3*time.Second, "first delivery", func() bool { return rec.distinct() == 5 })
	// The copies, as a retried write would leave them, read by a consumer
	// in another process, which has never seen the originals.
	stop1()
	<-done1
	subscribeBG(t, c2, "t", "g", rec.handle)
	raw := redis.NewClient(&redis.Options{Addr: srv.Addr(), DisableIdentity: true})
	defer raw.Close()
	for i := range 5 {
		raw.XAdd(context.Background(), &redis.XAddArgs{Stream: "t", Values: []any{"o", "pubA", "s", fmt.Sprint(i + 1), "d", fmt.Sprint("m", i)}})
	}
	raw.XAdd(context.Background(), &redis.XAddArgs{Stream: "t", Values: []any{"d", "foreign"}})
	waitUntil(t, 3*time.Second, "the foreign entry", func() bool { return rec.distinct() == 6 })
	time.Sleep(100 * time.Millisecond)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.got) != 6 {
		t.Fatalf("handled %v, want m0..m4 once and foreign", rec.got)
	}
	if d := metricValue(t, reg2, "backchannel_bus_redis_duplicates_dropped_total"); d != 5 {
		t.Fatalf("the second process dropped %v duplicates, want 5", d)
	}
}

// With Redis gone for good, publishes wait in the bounded outbox and are
// refused past it; Publish does not block meanwhile.
func TestRedisOutboxBound(t *testing.T) {
	srv := redistest.Start(t)
	b := newRedisBus(t, srv.Addr(), bus.RedisOptions{OutboxLimit: 100})
	srv.Kill()
	ctx := context.Background()
	start := time.Now()
	var err error
	n := 0
	for ; n < 200; n++ {
		if err = b.Publish(ctx, "t", []byte("x")); err != nil {
			break
		}
	}
	if !errors.Is(err, bus.ErrOutboxFull) || n != 100 {
		t.Fatalf("accepted %d, then %v; want 100 then ErrOutboxFull", n, err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("publishing into a dead Redis took %v", el)
	}
	if u := b.Unconfirmed("t"); u != 100 {
		t.Fatalf("outbox holds %d", u)
	}
}

// Messages nobody subscribed to wait in the stream for a group to come, and
// leave the outbox after GroupTimeout; messages a live group handled leave
// it at once.
func TestRedisConfirmation(t *testing.T) {
	srv := redistest.Start(t)
	reg := prometheus.NewRegistry()
	b := newRedisBus(t, srv.Addr(), bus.RedisOptions{GroupTimeout: 300 * time.Millisecond, ConfirmInterval: 20 * time.Millisecond, Block: 50 * time.Millisecond, Metrics: reg})
	ctx := context.Background()
	_ = b.Publish(ctx, "lonely", []byte("1"), []byte("2"))
	time.Sleep(100 * time.Millisecond)
	if u := b.Unconfirmed("lonely"); u != 2 {
		t.Fatalf("outbox holds %d before GroupTimeout, want 2", u)
	}
	waitUntil(t, 3*time.Second, "unwanted messages to leave the outbox", func() bool { return b.Unconfirmed("lonely") == 0 })
	if v := metricValue(t, reg, "backchannel_bus_redis_outbox_dropped_total"); v != 2 {
		t.Fatalf("outbox_dropped_total = %v", v)
	}
	rec := newRecord()
	subscribeBG(t, b, "lonely", "late", rec.handle) // the stream still has them
	waitUntil(t, 3*time.Second, "a late group to read what it missed", func() bool { return rec.distinct() == 2 })

	block := make(chan struct{})
	subscribeBG(t, b, "busy", "g", func(context.Context, []bus.Message) error { <-block; return nil })
	_ = b.Publish(ctx, "busy", []byte("a"), []byte("b"))
	time.Sleep(150 * time.Millisecond)
	if u := b.Unconfirmed("busy"); u != 2 {
		t.Fatalf("outbox holds %d while the handler has not returned, want 2", u)
	}
	close(block)
	waitUntil(t, 3*time.Second, "handled messages to be confirmed", func() bool { return b.Unconfirmed("busy") == 0 })
	if v := metricValue(t, reg, "backchannel_bus_redis_outbox_messages"); v != 0 {
		t.Fatalf("outbox gauge = %v", v)
	}
}

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }
