package media

import (
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// gopWriter feeds an H.264 track one access unit per frame, 3000 ticks
// (30 fps) apart: an SPS-led keyframe every gop frames, deltas in between.
type gopWriter struct {
	w    *TrackWriter
	seq  uint16
	ts   uint32
	n    int
	gop  int
	size int // payload bytes per packet (at least 5)
}

func (g *gopWriter) frame(t testing.TB, packets int) {
	for i := range packets {
		payload := make([]byte, max(g.size, 5))
		for j := range payload {
			payload[j] = 0x5a
		}
		payload[0], payload[1], payload[2] = 0x41, byte(g.n), byte(i)
		if g.n%g.gop == 0 && i == 0 {
			copy(payload, []byte{0x67, 0x42, 0xe0, 0x1f, byte(g.n)})
		}
		p := pkt(g.seq, g.ts, payload)
		p.Marker = i == packets-1
		if err := g.w.WriteRTP(p); err != nil {
			t.Error(err)
			return
		}
		g.seq++
	}
	g.ts += 3000
	g.n++
}

func publishVideo(t *testing.T, r *Registry, name string) *TrackWriter {
	t.Helper()
	pub, err := r.Publish(name, PublisherInfo{Protocol: ProtocolWHIP}, []Codec{h264}, &fakeSource{})
	if err != nil {
		t.Fatal(err)
	}
	w, _ := pub.Track(KindVideo)
	return w
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (t *Track) catchingUp() int {
	t.sinkMu.Lock()
	defer t.sinkMu.Unlock()
	return len(t.catchUps)
}

// A sink joining mid-GOP gets the GOP from its keyframe, with sequence
// numbers contiguous with the live packets that follow and timestamps of
// its own that increase and end on the live ones; a sink already attached
// sees the track's packets untouched.
func TestCatchUpReplaysGOPThenJoinsLive(t *testing.T) {
	r := NewRegistry("n")
	w := publishVideo(t, r, "s")
	tr := w.Track()
	g := &gopWriter{w: w, gop: 100}
	old := &recordingSink{}
	if _, err := tr.AddSink(old); err != nil {
		t.Fatal(err)
	}
	for range 40 {
		g.frame(t, 3)
	}
	late := &recordingSink{}
	remove, catching, err := tr.AddSinkFromKeyframe(late)
	if err != nil || !catching {
		t.Fatalf("AddSinkFromKeyframe: catching up %v, %v", catching, err)
	}
	defer remove()
	waitUntil(t, "the hand-over", func() bool { return tr.catchingUp() == 0 })
	for range 10 {
		g.frame(t, 3)
	}
	if tr.CatchUps() != 1 {
		t.Fatalf("CatchUps() = %d", tr.CatchUps())
	}

	got, want := late.snapshot(), old.snapshot()
	if len(got) != 150 || len(want) != 150 {
		t.Fatalf("late sink got %d packets, old %d; want 150 each", len(got), len(want))
	}
	if !got[0].Keyframe {
		t.Fatal("the catch-up does not start at the keyframe")
	}
	step := uint32(90000 / 10000)
	lastFrameTS := want[119].Header.Timestamp
	for i, p := range got {
		o := want[i]
		if p.Header.SequenceNumber != o.Header.SequenceNumber || p.Header.SSRC != o.Header.SSRC || string(p.Payload) != string(o.Payload) || p.Header.Marker != o.Header.Marker {
			t.Fatalf("packet %d differs from the track's: %+v vs %+v", i, p.Header, o.Header)
		}
		if i < 120 {
			frame := uint32(i / 3)
			if !p.CatchUp || p.Header.Timestamp != lastFrameTS-(39-frame)*step {
				t.Fatalf("catch-up packet %d: CatchUp %v, ts %d, want %d", i, p.CatchUp, p.Header.Timestamp, lastFrameTS-(39-frame)*step)
			}
		} else if p.CatchUp || p.Header.Timestamp != o.Header.Timestamp {
			t.Fatalf("live packet %d: CatchUp %v, ts %d, want the track's %d", i, p.CatchUp, p.Header.Timestamp, o.Header.Timestamp)
		}
	}
	for i := 1; i < len(want); i++ {
		if want[i].CatchUp {
			t.Fatal("the old sink got a catch-up packet")
		}
	}
}

// With the publisher writing all along, sinks joining at random moments
// each get an unbroken run of sequence numbers from a keyframe on, no
// packet twice, timestamps that never go back, and the track's own
// packets once caught up.
func TestCatchUpUnderConcurrentWrites(t *testing.T) {
	r := NewRegistry("n")
	w := publishVideo(t, r, "s")
	tr := w.Track()
	ref := &recordingSink{}
	if _, err := tr.AddSink(ref); err != nil {
		t.Fatal(err)
	}
	g := &gopWriter{w: w, gop: 60, size: 300}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			g.frame(t, 1+g.n%4)
			time.Sleep(time.Millisecond)
		}
	}()
	var sinks []*recordingSink
	for range 6 {
		time.Sleep(time.Duration(20+rand.IntN(60)) * time.Millisecond)
		s := &recordingSink{}
		remove, _, err := tr.AddSinkFromKeyframe(s)
		if err != nil {
			t.Fatal(err)
		}
		defer remove()
		sinks = append(sinks, s)
	}
	waitUntil(t, "every hand-over", func() bool { return tr.catchingUp() == 0 })
	time.Sleep(20 * time.Millisecond)
	close(stop)
	wg.Wait()

	all := ref.snapshot()
	bySeq := map[uint16]Packet{}
	for _, p := range all {
		bySeq[p.Header.SequenceNumber] = p
	}
	for n, s := range sinks {
		got := s.snapshot()
		if len(got) == 0 || !got[0].Keyframe {
			t.Fatalf("sink %d: %d packets, first a keyframe: %v", n, len(got), len(got) > 0 && got[0].Keyframe)
		}
		live := false
		for i, p := range got {
			o, ok := bySeq[p.Header.SequenceNumber]
			if !ok || string(o.Payload) != string(p.Payload) {
				t.Fatalf("sink %d packet %d (seq %d) is not the track's", n, i, p.Header.SequenceNumber)
			}
			if i == 0 {
				continue
			}
			prev := got[i-1]
			if p.Header.SequenceNumber != prev.Header.SequenceNumber+1 {
				t.Fatalf("sink %d: seq %d after %d", n, p.Header.SequenceNumber, prev.Header.SequenceNumber)
			}
			if int32(p.Header.Timestamp-prev.Header.Timestamp) < 0 {
				t.Fatalf("sink %d: timestamp went back at packet %d", n, i)
			}
			if !p.CatchUp {
				live = true
				if p.Header.Timestamp != o.Header.Timestamp {
					t.Fatalf("sink %d: live packet %d has ts %d, the track's is %d", n, i, p.Header.Timestamp, o.Header.Timestamp)
				}
			} else if live {
				t.Fatalf("sink %d: catch-up packet after live ones", n)
			}
		}
		if !live {
			t.Fatalf("sink %d never went live", n)
		}
	}
}

// A catch-up is paced at the configured rate, after an initial burst.
func TestCatchUpIsPaced(t *testing.T) {
	r := NewRegistry("n")
	r.SetFastStart(FastStart{MinRate: 100_000, RateFactor: 0.001})
	w := publishVideo(t, r, "s")
	tr := w.Track()
	g := &gopWriter{w: w, gop: 1000, size: 988}
	for range 100 {
		g.frame(t, 1) // 100 KB
	}
	s := &recordingSink{}
	start := time.Now()
	remove, catching, err := tr.AddSinkFromKeyframe(s)
	if err != nil || !catching {
		t.Fatal(catching, err)
	}
	defer remove()
	waitUntil(t, "the hand-over", func() bool { return tr.catchingUp() == 0 })
	// 100 KB at 100 KB/s with a 32 KiB burst: about 0.67 s.
	if d := time.Since(start); d < 550*time.Millisecond || d > 3*time.Second {
		t.Fatalf("catch-up took %v, want about 0.67 s", d)
	}
}

// Removing a sink mid-catch-up stops it at once; a stream ending
// mid-catch-up detaches the sink once, after its last packet.
func TestCatchUpRemoveAndDetach(t *testing.T) {
	r := NewRegistry("n")
	r.SetOfflineGrace(0)
	r.SetFastStart(FastStart{MinRate: 20_000, RateFactor: 0.001})
	pub, err := r.Publish("s", PublisherInfo{Protocol: ProtocolWHIP}, []Codec{h264}, &fakeSource{})
	if err != nil {
		t.Fatal(err)
	}
	w, _ := pub.Track(KindVideo)
	tr := w.Track()
	g := &gopWriter{w: w, gop: 1000, size: 1000}
	for range 200 {
		g.frame(t, 1)
	}
	a := &recordingSink{}
	removeA, _, _ := tr.AddSinkFromKeyframe(a)
	time.Sleep(50 * time.Millisecond)
	removeA()
	n := len(a.snapshot())
	if n == 0 || n >= 200 {
		t.Fatalf("%d packets before removal", n)
	}
	time.Sleep(100 * time.Millisecond)
	if len(a.snapshot()) != n {
		t.Fatal("packets after removal")
	}
	if err, _ := a.detachState(); err != nil {
		t.Fatal("a removed sink was told it was detached")
	}

	b := &recordingSink{}
	if _, _, err := tr.AddSinkFromKeyframe(b); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	pub.Close()
	err, times := b.detachState()
	if !errors.Is(err, ErrStreamEnded) || times != 1 {
		t.Fatalf("detached %d times with %v", times, err)
	}
	n = len(b.snapshot())
	time.Sleep(100 * time.Millisecond)
	if len(b.snapshot()) != n || tr.catchingUp() != 0 {
		t.Fatal("the catch-up went on after the stream ended")
	}
	if _, _, err := tr.AddSinkFromKeyframe(&recordingSink{}); !errors.Is(err, ErrStreamEnded) {
		t.Fatalf("joining an ended track: %v", err)
	}
}

// No catch-up from a GOP over its byte bound or older than MaxAge, nor
// with fast start disabled: the sink joins live.
func TestCatchUpBounds(t *testing.T) {
	for _, c := range []struct {
		name string
		fs   FastStart
		wait time.Duration
	}{
		{"bytes", FastStart{MaxBytes: 10_000}, 0},
		{"age", FastStart{MaxAge: 30 * time.Millisecond}, 60 * time.Millisecond},
		{"disabled", FastStart{Disabled: true}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := NewRegistry("n")
			r.SetFastStart(c.fs)
			w := publishVideo(t, r, "s")
			g := &gopWriter{w: w, gop: 1000, size: 1000}
			for range 20 {
				g.frame(t, 1)
			}
			time.Sleep(c.wait)
			s := &recordingSink{}
			remove, catching, err := w.Track().AddSinkFromKeyframe(s)
			if err != nil || catching {
				t.Fatalf("catching up %v, %v", catching, err)
			}
			defer remove()
			g.frame(t, 1)
			if got := s.snapshot(); len(got) != 1 || got[0].CatchUp {
				t.Fatalf("sink got %d packets", len(got))
			}
		})
	}
	// A GOP that is within bounds is offered again after the next keyframe.
	r := NewRegistry("n")
	r.SetFastStart(FastStart{MaxBytes: 10_000})
	w := publishVideo(t, r, "s")
	g := &gopWriter{w: w, gop: 20, size: 1000}
	for range 25 {
		g.frame(t, 1)
	}
	remove, catching, _ := w.Track().AddSinkFromKeyframe(&recordingSink{})
	defer remove()
	if !catching {
		t.Fatal("no catch-up from a fresh GOP after one that outgrew its bound")
	}
}

// Audio tracks have no GOP: their sinks join live.
func TestCatchUpIsForVideoOnly(t *testing.T) {
	r := NewRegistry("n")
	pub, err := r.Publish("s", PublisherInfo{Protocol: ProtocolWHIP}, []Codec{opus}, &fakeSource{})
	if err != nil {
		t.Fatal(err)
	}
	w, _ := pub.Track(KindAudio)
	for i := range 10 {
		_ = w.WriteRTP(pkt(uint16(i), uint32(i*960), []byte{0xfc, 1}))
	}
	remove, catching, err := w.Track().AddSinkFromKeyframe(&recordingSink{})
	if err != nil || catching {
		t.Fatal(catching, err)
	}
	remove()
}
