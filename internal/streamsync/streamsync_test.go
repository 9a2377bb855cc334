package streamsync

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/backchannel/backchannel/internal/bus"
	"github.com/backchannel/backchannel/internal/media"
)

type recorder struct {
	mu  sync.Mutex
	evs []string
}

func (r *recorder) note(ev media.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	state := "off"
	if ev.Live {
		state = "live"
	}
	r.evs = append(r.evs, ev.Stream+":"+state)
}

func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.evs
	r.evs = nil
	return out
}

func info(name string) media.StreamInfo { return media.StreamInfo{Name: name, StartedAt: time.Now()} }

func want(t *testing.T, r *recorder, evs ...string) {
	t.Helper()
	got := r.take()
	if len(got) != len(evs) {
		t.Fatalf("events %v, want %v", got, evs)
	}
	for i := range got {
		if got[i] != evs[i] {
			t.Fatalf("events %v, want %v", got, evs)
		}
	}
}

func TestViewReportsTransitionsOnly(t *testing.T) {
	var r recorder
	v := NewView(r.note)
	v.apply(announcement{Node: "a", Event: &event{Stream: "x", Live: true, Info: info("x")}, TTLms: 1000})
	want(t, &r, "x:live")
	// A takeover on the same node and the stream also starting elsewhere: no flap.
	v.apply(announcement{Node: "a", Event: &event{Stream: "x", Live: true, Info: info("x")}, TTLms: 1000})
	v.apply(announcement{Node: "b", Event: &event{Stream: "x", Live: true, Info: info("x")}, TTLms: 1000})
	want(t, &r)
	v.apply(announcement{Node: "a", Event: &event{Stream: "x"}, TTLms: 1000})
	want(t, &r)
	if w := v.Where("x"); len(w) != 1 || w[0] != "b" {
		t.Fatalf("where %v", w)
	}
	v.apply(announcement{Node: "b", Event: &event{Stream: "x"}, TTLms: 1000})
	want(t, &r, "x:off")
	// Off for a stream never seen: nothing.
	v.apply(announcement{Node: "b", Event: &event{Stream: "y"}, TTLms: 1000})
	want(t, &r)
}

func TestSnapshotsReconcileAndSilentNodesExpire(t *testing.T) {
	var r recorder
	v := NewView(r.note)
	now := time.Unix(1000, 0)
	v.now = func() time.Time { return now }
	v.apply(announcement{Node: "a", Snapshot: true, Streams: []media.StreamInfo{info("x"), info("y")}, TTLms: 3000})
	got := r.take()
	if len(got) != 2 {
		t.Fatalf("events %v", got)
	}
	// The next snapshot lacks y (its off-air event was lost): y goes off.
	v.apply(announcement{Node: "a", Snapshot: true, Streams: []media.StreamInfo{info("x")}, TTLms: 3000})
	want(t, &r, "y:off")
	if live := v.Live(); len(live) != 1 || live[0].Name != "x" {
		t.Fatalf("live %v", live)
	}
	now = now.Add(2 * time.Second)
	v.Expire()
	want(t, &r)
	now = now.Add(2 * time.Second)
	v.Expire()
	want(t, &r, "x:off")
}

func TestAnnounceAndFollowOverABus(t *testing.T) {
	b := bus.NewMemory()
	defer b.Close()
	reg := media.NewRegistry("ingest-1")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var r recorder
	v := NewView(r.note)
	done := make(chan error, 2)
	go func() { done <- Announce(ctx, b, "ingest-1", reg, 50*time.Millisecond, log) }()
	go func() { done <- v.Follow(ctx, b, "app-1", log) }()

	pub, err := reg.Publish("match", media.PublisherInfo{Protocol: "test"}, []media.Codec{{MimeType: media.MimeH264, ClockRate: 90000}}, nopSource{})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(v.Live()) == 1 })
	if w := v.Where("match"); len(w) != 1 || w[0] != "ingest-1" {
		t.Fatalf("where %v", w)
	}
	pub.Close()
	waitFor(t, func() bool { return len(v.Live()) == 0 })
	want(t, &r, "match:live", "match:off")

	cancel()
	for range 2 {
		if err := <-done; err != context.Canceled {
			t.Fatalf("stopped with %v", err)
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type nopSource struct{}

func (nopSource) RequestKeyframe(media.Kind) {}
func (nopSource) Close() error               { return nil }

// Streams relayed by edges never make a stream live or keep it live; they
// are listed apart, for edges looking for a nearby upstream.
func TestRelaysAreNotOrigins(t *testing.T) {
	var r recorder
	v := NewView(r.note)
	relayed := func(node, upstream string) media.StreamInfo {
		i := info("x")
		i.Protocol, i.Node, i.Publisher = media.ProtocolRelay, node, upstream
		return i
	}
	v.apply(announcement{Node: "e1", Event: &event{Stream: "x", Live: true, Info: relayed("e1", "i1")}, TTLms: 1000})
	want(t, &r)
	if len(v.Live()) != 0 || len(v.Where("x")) != 0 {
		t.Fatal("a relay made the stream live")
	}
	v.apply(announcement{Node: "i1", Event: &event{Stream: "x", Live: true, Info: info("x")}, TTLms: 1000})
	want(t, &r, "x:live")
	v.apply(announcement{Node: "e2", Snapshot: true, Streams: []media.StreamInfo{relayed("e2", "e1")}, TTLms: 1000})
	want(t, &r)
	if w := v.Where("x"); len(w) != 1 || w[0] != "i1" {
		t.Fatalf("origins %v", w)
	}
	if rs := v.Relays("x"); len(rs) != 2 || rs[0].Node != "e1" || rs[1].Publisher != "e1" {
		t.Fatalf("relays %+v", rs)
	}
	// The origin goes: off air, although edges still relay it.
	v.apply(announcement{Node: "i1", Event: &event{Stream: "x"}, TTLms: 1000})
	want(t, &r, "x:off")
	v.apply(announcement{Node: "e1", Event: &event{Stream: "x"}, TTLms: 1000})
	v.apply(announcement{Node: "e2", Snapshot: true, TTLms: 1000})
	want(t, &r)
	if len(v.Relays("x")) != 0 {
		t.Fatal("relays left")
	}
}
