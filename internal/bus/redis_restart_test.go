package bus_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/backchannel/backchannel/internal/bus"
	"github.com/backchannel/backchannel/internal/redistest"
)

// record keeps what one consumer group handled, in the order its handlers
// saw it.
type record struct {
	mu    sync.Mutex
	got   []string
	count map[string]int
}

func newRecord() *record { return &record{count: map[string]int{}} }

func (r *record) handle(_ context.Context, batch []bus.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range batch {
		r.got = append(r.got, string(m.Data))
		r.count[string(m.Data)]++
	}
	return nil
}

func (r *record) distinct() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.count)
}

func subscribeBG(t *testing.T, b bus.Bus, topic, group string, h bus.Handler) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = b.Subscribe(ctx, topic, group, h)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

func waitUntil(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRedisSurvivesRestartWithEmptyDatabase publishes from two processes
// (two buses) while two groups consume, SIGKILLs redis-server in the
// middle, starts it again empty, and checks that every group handled every
// message exactly once, in each publisher's order where a group has one
// consumer, and that every bus signalled the reset.
func TestRedisSurvivesRestartWithEmptyDatabase(t *testing.T) {
	srv := redistest.Start(t)
	regs := make([]*prometheus.Registry, 4)
	opt := func(i int, confirm time.Duration) bus.RedisOptions {
		regs[i] = prometheus.NewRegistry()
		return bus.RedisOptions{Block: 100 * time.Millisecond, ResetGrace: 100 * time.Millisecond, ConfirmInterval: confirm, Metrics: regs[i]}
	}
	// pub1 learns confirmations slowly, so that much of what was handled
	// is still in its outbox at the kill, is republished and must be
	// recognised as handled.
	pub1 := newRedisBus(t, srv.Addr(), opt(0, time.Second))
	pub2 := newRedisBus(t, srv.Addr(), opt(1, 20*time.Millisecond))
	app := newRedisBus(t, srv.Addr(), opt(2, 20*time.Millisecond))   // two consumers of group application
	audit := newRedisBus(t, srv.Addr(), opt(3, 20*time.Millisecond)) // one consumer of group audit
	var resets []<-chan struct{}
	for _, b := range []*bus.Redis{pub1, pub2, app, audit} {
		resets = append(resets, b.Resets())
	}

	appRec, auditRec := newRecord(), newRecord()
	subscribeBG(t, app, bus.Upward, bus.ApplicationGroup, appRec.handle)
	subscribeBG(t, app, bus.Upward, bus.ApplicationGroup, appRec.handle)
	subscribeBG(t, audit, bus.Upward, "audit", auditRec.handle)
	waitUntil(t, 5*time.Second, "groups to exist", func() bool {
		return pub1.Publish(context.Background(), "warmup", []byte("x")) == nil
	})

	const perPublisher = 3000
	killAt := make(chan struct{})
	var wg sync.WaitGroup
	for p, b := range []*bus.Redis{pub1, pub2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perPublisher {
				if i == perPublisher/3 && p == 0 {
					close(killAt)
				}
				msg := []byte(fmt.Sprintf("p%d-%05d", p, i))
				if err := b.Publish(context.Background(), bus.Upward, msg); err != nil {
					t.Errorf("publish %s: %v", msg, err)
					return
				}
				if i%50 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
		}()
	}
	<-killAt
	waitUntil(t, 5*time.Second, "some messages handled before the kill", func() bool { return auditRec.distinct() > 100 })
	srv.Kill()
	time.Sleep(300 * time.Millisecond) // publishers keep publishing into their outboxes
	srv.Restart()
	wg.Wait()

	total := 2 * perPublisher
	waitUntil(t, 20*time.Second, "every message handled by both groups", func() bool {
		return appRec.distinct() == total && auditRec.distinct() == total
	})
	time.Sleep(300 * time.Millisecond) // late duplicates would show now
	for name, r := range map[string]*record{"application": appRec, "audit": auditRec} {
		r.mu.Lock()
		for m, n := range r.count {
			if n != 1 {
				t.Errorf("group %s handled %s %d times", name, m, n)
			}
		}
		if len(r.got) != total {
			t.Errorf("group %s handled %d messages, want %d", name, len(r.got), total)
		}
		r.mu.Unlock()
	}
	// One consumer: each publisher's order holds across the restart.
	last := map[byte]string{}
	auditRec.mu.Lock()
	for _, m := range auditRec.got {
		if prev := last[m[1]]; prev != "" && m <= prev {
			t.Errorf("audit: %s after %s", m, prev)
			break
		}
		last[m[1]] = m
	}
	auditRec.mu.Unlock()
	for i, c := range resets {
		select {
		case <-c:
		case <-time.After(5 * time.Second):
			t.Errorf("bus %d did not signal the reset", i)
		}
	}
	dupApp := metricValue(t, regs[2], "backchannel_bus_redis_duplicates_dropped_total")
	dupAudit := metricValue(t, regs[3], "backchannel_bus_redis_duplicates_dropped_total")
	published := metricValue(t, regs[0], "backchannel_bus_redis_published_total")
	t.Logf("pub1 wrote %v entries for %d messages; duplicates dropped: application %v, audit %v", published, perPublisher, dupApp, dupAudit)
	if dupApp == 0 || dupAudit == 0 {
		t.Errorf("no republished duplicate was dropped (application %v, audit %v): the restart did not exercise the republish", dupApp, dupAudit)
	}
	// Every bus must see the reset. Not every bus necessarily saw Redis
	// unreachable: go-redis retries a failed command with backoff, and a
	// bus whose retries spanned the 300 ms outage only learns of it from
	// the new epoch marker. At least one bus (a blocked reader) sees it.
	var reconnects float64
	for i, reg := range regs {
		if v := metricValue(t, reg, "backchannel_bus_redis_resets_total"); v != 1 {
			t.Errorf("bus %d counted %v resets, want 1", i, v)
		}
		reconnects += metricValue(t, reg, "backchannel_bus_redis_reconnects_total")
	}
	if reconnects < 1 {
		t.Errorf("no bus counted a reconnect")
	}
	// Confirmation drains the outboxes once both groups handled everything.
	waitUntil(t, 5*time.Second, "outboxes to drain", func() bool {
		return pub1.Unconfirmed(bus.Upward) == 0 && pub2.Unconfirmed(bus.Upward) == 0
	})
}

func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		var v float64
		for _, m := range mf.GetMetric() {
			v += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
		return v
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}
