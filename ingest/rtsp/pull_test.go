package rtsp_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/backchannel/backchannel/ingest"
	"github.com/backchannel/backchannel/ingest/rtsp"
	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/whipclient/whiptest"
)

// countingSink counts packets and remembers when they came.
type countingSink struct {
	mu       sync.Mutex
	n        int
	keys     int
	last     time.Time
	maxGap   time.Duration
	detached error
}

func (s *countingSink) WriteRTP(p *media.Packet) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if !s.last.IsZero() && now.Sub(s.last) > s.maxGap {
		s.maxGap = now.Sub(s.last)
	}
	s.last = now
	s.n++
	if p.Keyframe {
		s.keys++
	}
}
func (s *countingSink) WriteSenderReport(media.SenderReport) {}
func (s *countingSink) Detached(err error) {
	s.mu.Lock()
	s.detached = err
	s.mu.Unlock()
}

func (s *countingSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

func (s *countingSink) resetGap() {
	s.mu.Lock()
	s.maxGap, s.last = 0, time.Time{}
	s.mu.Unlock()
}

func (s *countingSink) gap() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxGap
}

func attachSink(t testing.TB, n *node, stream string, kind media.Kind) *countingSink {
	t.Helper()
	st, ok := n.Registry.Lookup(stream)
	if !ok {
		t.Fatalf("no stream %s", stream)
	}
	tr, ok := st.Track(kind)
	if !ok {
		t.Fatalf("stream %s has no %s track", stream, kind)
	}
	s := &countingSink{}
	remove, err := tr.AddSink(s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(remove)
	return s
}

func waitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// TestPullSurvivesCameraRestart: a second server, fed by ffmpeg, plays the
// IP camera; the first pulls from it. When the camera restarts (server
// and encoder), the pull reconnects and the stream's viewers get media
// again without renegotiating.
func TestPullSurvivesCameraRestart(t *testing.T) {
	t.Parallel()
	cam := startNode(t, nodeOptions{})
	camAddr := cam.RTSP.Addr().String()
	feed := startFFmpeg(t, publishArgs(30, "tcp", cam.rtspURL("feed", "key="+whiptest.Key))...)
	cam.waitLive(t, "feed", 10*time.Second)

	main := startNode(t, nodeOptions{})
	pullFile := filepath.Join(t.TempDir(), "pulls.json")
	p, err := rtsp.NewPuller(rtsp.PullerConfig{Registry: main.Registry, File: pullFile,
		MinBackoff: 100 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, Logger: whiptest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	if _, err := p.Add(rtsp.PullConfig{Stream: "lobby", URL: "rtsp://" + camAddr + "/feed"}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Add(rtsp.PullConfig{Stream: "lobby", URL: "rtsp://" + camAddr + "/feed"}); err != rtsp.ErrPullExists {
		t.Fatalf("second pull for one stream: %v", err)
	}
	info := main.waitLive(t, "lobby", 10*time.Second)
	if info.Protocol != media.ProtocolRTSPPull || info.Publisher != camAddr || len(info.Tracks) != 2 {
		t.Fatalf("pulled stream %+v", info)
	}
	sink := attachSink(t, main, "lobby", media.KindVideo)
	waitFor(t, 5*time.Second, "pulled packets", func() bool { return sink.count() > 50 })
	if s, _ := p.Get("lobby"); s.State != rtsp.PullLive {
		t.Fatalf("pull state %+v", s)
	}

	// The camera goes away: encoder and server.
	feed.kill()
	if err := cam.RTSP.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "the pull to notice", func() bool {
		s, _ := p.Get("lobby")
		return s.State == rtsp.PullRetrying || s.State == rtsp.PullConnecting
	})
	before := sink.count()
	down := time.Now()

	// It comes back on the same address.
	cam2, err := rtsp.Listen(rtsp.Config{Addr: camAddr, Registry: cam.Registry, Keys: ingest.MasterKey(whiptest.Key)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cam2.Close() })
	startFFmpeg(t, publishArgs(30, "tcp", "rtsp://"+camAddr+"/feed?key="+whiptest.Key)...)
	waitFor(t, 20*time.Second, "media after the camera restarted", func() bool { return sink.count() > before+50 })
	t.Logf("media back %v after the camera went down", time.Since(down).Round(time.Millisecond))
	s, _ := p.Get("lobby")
	if s.State != rtsp.PullLive || s.Restarts < 1 || s.Error == "" {
		t.Fatalf("pull status after the restart: %+v", s)
	}
	if sink.detached != nil {
		t.Fatalf("the viewer's track was detached: %v", sink.detached)
	}

	// The configuration survives a restart of the puller.
	_ = p.Close()
	p2, err := rtsp.NewPuller(rtsp.PullerConfig{Registry: media.NewRegistry("x"), File: pullFile})
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	if l := p2.List(); len(l) != 1 || l[0].Stream != "lobby" || l[0].URL != "rtsp://"+camAddr+"/feed" {
		t.Fatalf("reloaded pulls %+v", l)
	}
	if err := p2.Remove("lobby"); err != nil {
		t.Fatal(err)
	}
	if err := p2.Remove("lobby"); err != rtsp.ErrNoPull {
		t.Fatalf("second Remove: %v", err)
	}
}

// TestOnDemandPull: an on-demand pull connects only when a reader asks for
// the stream, and lets go once nobody reads it.
func TestOnDemandPull(t *testing.T) {
	t.Parallel()
	cam := startNode(t, nodeOptions{})
	startFFmpeg(t, publishArgs(30, "tcp", cam.rtspURL("feed", "key="+whiptest.Key))...)
	cam.waitLive(t, "feed", 10*time.Second)

	main := startNode(t, nodeOptions{grace: -1})
	p, err := rtsp.NewPuller(rtsp.PullerConfig{Registry: main.Registry, IdleTimeout: time.Second, MinBackoff: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	if _, err := p.Add(rtsp.PullConfig{Stream: "od", URL: cam.rtspURL("feed", ""), OnDemand: true}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if s, _ := p.Get("od"); s.State != rtsp.PullIdle || cam.RTSP.Sessions() != 1 {
		t.Fatalf("on-demand pull started by itself: %+v (camera sessions %d)", s, cam.RTSP.Sessions())
	}

	// A reader's DESCRIBE brings it up.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := rtsp.Dial(ctx, main.rtspURL("od", ""))
	if err != nil {
		t.Fatal(err)
	}
	medias, err := c.Describe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range medias {
		if err := c.SetupTCP(ctx, m, 2*i); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Play(ctx); err != nil {
		t.Fatal(err)
	}
	got := 0
	readErr := make(chan error, 1)
	go func() {
		readErr <- c.ReadFrames(5*time.Second, func(ch byte, b []byte) {
			if ch == 0 {
				got++
				if got == 100 {
					c.Close()
				}
			}
		})
	}()
	select {
	case <-readErr:
	case <-ctx.Done():
		t.Fatal("reader got no media from the on-demand pull")
	}
	if got < 100 {
		t.Fatalf("reader got %d video packets", got)
	}
	// Nobody reads any more: the pull lets go.
	waitFor(t, 10*time.Second, "the idle pull to stop", func() bool {
		s, _ := p.Get("od")
		return s.State == rtsp.PullIdle
	})
	waitFor(t, 5*time.Second, "the camera session to end", func() bool { return cam.RTSP.Sessions() == 1 })
	// (List, not Lookup: a lookup is demand and would start it again.)
	if len(main.Registry.List()) != 0 {
		t.Fatal("the idle pull's stream is still live")
	}
}
