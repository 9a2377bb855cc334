package demo_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/backchannel/backchannel/internal/demo"
	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/whipclient"
	"github.com/backchannel/backchannel/internal/whipclient/whiptest"
)

type arrival struct {
	at  time.Time
	seq uint16
	ts  uint32
	m   bool
}

// The demo publishes through the real WHIP path; a WHEP viewer gets video
// at 30 fps and audio at 50 packets/s, and across the loop point the
// timestamps and sequence numbers just keep going.
func TestRunPublishesLoopingClip(t *testing.T) {
	srv := whiptest.Start(t, whiptest.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- demo.Run(ctx, srv.WHIP("demo"), whiptest.Key, whiptest.Logger()) }()
	defer func() {
		cancel()
		<-runErr
	}()
	srv.WaitLive(t, "demo")

	var mu sync.Mutex
	var video, audio []arrival
	pctx, pcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer pcancel()
	player, err := whipclient.Play(pctx, srv.WHEP("demo"), whipclient.OnRTP(func(tr *webrtc.TrackRemote, p *rtp.Packet) {
		a := arrival{at: time.Now(), seq: p.SequenceNumber, ts: p.Timestamp, m: p.Marker}
		mu.Lock()
		if tr.Kind() == webrtc.RTPCodecTypeVideo {
			video = append(video, a)
		} else {
			audio = append(audio, a)
		}
		mu.Unlock()
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer player.Close()

	// Watch for a little over one loop, so the loop point is crossed.
	clip, _ := demo.LoadClip()
	time.Sleep(clip.Duration() + 1500*time.Millisecond)
	mu.Lock()
	v, a := append([]arrival(nil), video...), append([]arrival(nil), audio...)
	mu.Unlock()

	var frames []arrival
	for _, p := range v {
		if p.m {
			frames = append(frames, p)
		}
	}
	// A viewer that joins mid-GOP (the demo went live a moment before)
	// first gets the GOP cache's frames, replayed with timestamps a few
	// ticks apart (fast start); the live stream follows.
	live := 1
	for live < len(frames) && frames[live].ts-frames[live-1].ts != 3000 {
		live++
	}
	if live > 1 {
		t.Logf("the first %d frames came from the GOP cache", live-1)
	}
	if live > len(clip.Frames) {
		t.Fatalf("no two frames 1/30 s apart in the first %d", live)
	}
	frames = frames[live-1:]
	if len(frames) < len(clip.Frames)+15 {
		t.Fatalf("viewer got %d live frames, want more than one loop (%d)", len(frames), len(clip.Frames))
	}
	span := frames[len(frames)-1].at.Sub(frames[0].at).Seconds()
	if fps := float64(len(frames)-1) / span; fps < 28 || fps > 32 {
		t.Fatalf("video at %.1f fps, want 30", fps)
	}
	// One late frame can be the shared machine's scheduler; a stall at the
	// loop point shows as a late frame every loop, or a long one.
	late := 0
	for i := 1; i < len(frames); i++ {
		if d := frames[i].ts - frames[i-1].ts; d < 2999 || d > 3001 {
			t.Fatalf("frame %d: timestamp step %d, want 3000 (1/30 s at 90 kHz)", i, d)
		}
		gap := frames[i].at.Sub(frames[i-1].at)
		if gap > 500*time.Millisecond {
			t.Fatalf("frame %d arrived %v after the previous one", i, gap)
		}
		if gap > 150*time.Millisecond {
			late++
			t.Logf("frame %d arrived %v after the previous one", i, gap)
		}
	}
	if late > 1 {
		t.Fatalf("%d frames arrived more than 150 ms after the previous one", late)
	}
	for i := 1; i < len(v); i++ {
		if v[i].seq != v[i-1].seq+1 {
			t.Fatalf("video sequence jump %d → %d", v[i-1].seq, v[i].seq)
		}
	}
	aspan := a[len(a)-1].at.Sub(a[0].at).Seconds()
	if pps := float64(len(a)-1) / aspan; pps < 47 || pps > 53 {
		t.Fatalf("audio at %.1f packets/s, want 50", pps)
	}
	for i := 1; i < len(a); i++ {
		if a[i].ts-a[i-1].ts != 960 || a[i].seq != a[i-1].seq+1 {
			t.Fatalf("audio packet %d: ts step %d, seq %d → %d", i, a[i].ts-a[i-1].ts, a[i-1].seq, a[i].seq)
		}
	}

	cancel()
	select {
	case err := <-runErr:
		if err != nil {
			t.Fatalf("Run returned %v", err)
		}
		runErr <- nil
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop with its context")
	}
	st, _ := srv.Registry.Lookup("demo")
	if st != nil && st.Live() {
		t.Fatal("demo stream still live after Run ended")
	}
}

// When its session is dropped, the demo publishes again. Here another
// publisher takes the stream over, which closes the demo's session; the
// demo comes back and takes it over in turn.
func TestRunRepublishesAfterSessionLoss(t *testing.T) {
	srv := whiptest.Start(t, whiptest.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- demo.Run(ctx, srv.WHIP("demo"), whiptest.Key, whiptest.Logger()) }()
	defer func() { cancel(); <-done }()
	srv.WaitLive(t, "demo")

	pctx, pcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer pcancel()
	intruder, err := whipclient.Publish(pctx, srv.WHIP("demo"), whiptest.Key, whipclient.WithoutAudio())
	if err != nil {
		t.Fatal(err)
	}
	defer intruder.Close()
	select {
	case <-intruder.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the demo did not publish again after losing its session")
	}
	st, ok := srv.Registry.Lookup("demo")
	if !ok || !st.Live() {
		t.Fatal("demo stream not live after republishing")
	}
	if tr, ok := st.Track(media.KindAudio); !ok || tr.Stream() != st {
		t.Fatal("republished demo has no audio")
	}
	if n := len(st.Tracks()); n != 2 {
		t.Fatalf("republished demo feeds %d tracks, want 2", n)
	}
}
