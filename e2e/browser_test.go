package e2e

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/backchannel/backchannel/internal/browsertest"
	"github.com/backchannel/backchannel/internal/codec/h264"
	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/whipclient"
	"github.com/backchannel/backchannel/internal/whipclient/whiptest"
)

type videoStats struct {
	FramesDecoded int     `json:"framesDecoded"`
	FreezeCount   int     `json:"freezeCount"`
	Width         int     `json:"frameWidth"`
	Height        int     `json:"frameHeight"`
	At            float64 `json:"at"`
}

// inboundVideo reads the WHEP session's inbound video statistics in the page.
const inboundVideo = `(async () => {
  const s = window.backchannel && window.backchannel.state.session;
  if (!s) return null;
  let out = null;
  (await s.pc.getStats()).forEach(r => {
    if (r.type === "inbound-rtp" && r.kind === "video") out = {
      framesDecoded: r.framesDecoded || 0, freezeCount: r.freezeCount || 0,
      frameWidth: r.frameWidth || 0, frameHeight: r.frameHeight || 0, at: performance.now() };
  });
  return out;
})()`

// TestWatchDemoInChromium: the demo broadcast plays in a real browser at full
// frame rate without freezes, and the page's telemetry reaches the server.
func TestWatchDemoInChromium(t *testing.T) {
	n := startNode(t, true)
	waitLive(t, n, "demo", 15*time.Second)
	b := browsertest.Launch(t)
	page := b.NewPage(t)
	page.Navigate(n.URL() + "/watch/demo")

	if err := page.WaitFor(20*time.Second, `window.backchannel && window.backchannel.state.session && window.backchannel.video.readyState >= 2 && !window.backchannel.video.paused`); err != nil {
		dump, _ := browsertest.Eval[string](page, `JSON.stringify({state: window.backchannel && Object.assign({}, window.backchannel.state, {session: !!window.backchannel.state.session}), ready: document.getElementById("video").readyState, paused: document.getElementById("video").paused, overlay: document.getElementById("overlay").textContent})`)
		t.Fatalf("video never started: %v\npage: %s", err, dump)
	}
	// Let the jitter buffer settle before measuring.
	time.Sleep(time.Second)
	first := browsertest.MustEval[*videoStats](page, inboundVideo)
	time.Sleep(10 * time.Second)
	last := browsertest.MustEval[*videoStats](page, inboundVideo)
	if first == nil || last == nil {
		t.Fatal("no inbound video statistics")
	}
	secs := (last.At - first.At) / 1000
	fps := float64(last.FramesDecoded-first.FramesDecoded) / secs
	t.Logf("decoded %.1f frames/s over %.1f s, %dx%d, freezeCount %d", fps, secs, last.Width, last.Height, last.FreezeCount)
	if fps < 25 {
		t.Errorf("decoded %.1f frames/s, want ≥ 25", fps)
	}
	// Counted over the measured window only. One freeze in 10 s can be the
	// shared 2-core machine; a stall at the demo's loop point would freeze
	// at every loop (more than one in the window).
	if freezes := last.FreezeCount - first.FreezeCount; freezes > 1 {
		t.Errorf("%d freezes in %.0f s, want at most 1", freezes, secs)
	}
	if last.Width != 640 || last.Height != 360 {
		t.Errorf("frame size %dx%d, want the demo clip's 640x360", last.Width, last.Height)
	}

	// Telemetry goes out every 5 s; by now the stream group has some.
	var group struct {
		Members int `json:"members"`
		QoE     struct {
			Total struct {
				Reports int     `json:"reports"`
				PlayMS  float64 `json:"play_ms"`
			} `json:"total"`
		} `json:"qoe"`
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if code := apiGet(t, n, "/groups/stream:demo", &group); code != 200 {
			t.Fatalf("GET /groups/stream:demo: %d", code)
		}
		if group.QoE.Total.Reports > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if group.Members != 1 {
		t.Errorf("stream:demo has %d members, want the one page", group.Members)
	}
	if group.QoE.Total.Reports == 0 || group.QoE.Total.PlayMS <= 0 {
		t.Errorf("no telemetry from the page reached the server: %+v", group.QoE.Total)
	}
}

// TestStudioGoesLiveFromChromium: the studio page publishes Chromium's fake
// camera over WHIP, preferring H.264, and a Go WHEP viewer receives it
// starting from a keyframe; a viewer page on the same node reports it live.
func TestStudioGoesLiveFromChromium(t *testing.T) {
	n := startNode(t, false)
	b := browsertest.Launch(t)
	studio := b.NewPage(t)
	studio.Navigate(n.URL() + "/studio?stream=cam&key=" + url.QueryEscape(n.PublishKey()))
	if err := studio.Do(10*time.Second, chromedp.Click(chromedp.ID("start"))); err != nil {
		t.Fatal(err)
	}
	if err := studio.WaitFor(20*time.Second, `window.backchannel.state.status === "Live"`); err != nil {
		status, _ := browsertest.Eval[string](studio, `window.backchannel.state.status`)
		t.Fatalf("studio never went live (status %q): %v", status, err)
	}
	waitLive(t, n, "cam", 10*time.Second)
	st, _ := n.Registry().Lookup("cam")
	info := st.Info()
	if len(info.Tracks) != 2 {
		t.Fatalf("studio published %d tracks, want video and audio: %+v", len(info.Tracks), info.Tracks)
	}
	if info.Tracks[0].Codec != media.MimeH264 {
		t.Errorf("studio published %s, want H.264 (setCodecPreferences)", info.Tracks[0].Codec)
	}

	var video, audio whiptest.Collector
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	viewer, err := whipclient.Play(ctx, n.URL()+"/whep/cam", whipclient.OnRTP(func(tr *webrtc.TrackRemote, p *rtp.Packet) {
		if tr.Kind() == webrtc.RTPCodecTypeVideo {
			video.Add(p)
		} else {
			audio.Add(p)
		}
	}))
	if err != nil {
		t.Fatalf("WHEP viewer: %v", err)
	}
	defer viewer.Close()
	time.Sleep(3 * time.Second)
	frames, err := video.H264Frames()
	if err != nil {
		t.Fatalf("reassembling the studio's H.264: %v", err)
	}
	if len(frames) < 45 || audio.Len() < 100 {
		t.Fatalf("viewer got %d video frames and %d audio packets in 3 s", len(frames), audio.Len())
	}
	nalTypes := map[byte]bool{}
	for _, nal := range h264.SplitAnnexB(frames[0]) {
		nalTypes[nal[0]&0x1f] = true
	}
	if !nalTypes[5] || !nalTypes[7] {
		t.Errorf("first frame the viewer got has NAL types %v, want an IDR with its SPS", nalTypes)
	}
	for _, nal := range h264.SplitAnnexB(frames[0]) {
		if nal[0]&0x1f == 7 {
			sps, err := h264.ParseSPS(nal)
			if err != nil {
				t.Fatalf("studio SPS: %v", err)
			}
			t.Logf("studio publishes %dx%d H.264 (profile %d)", sps.Width, sps.Height, sps.ProfileIDC)
		}
	}

	// Stop: the stream goes off air.
	if err := studio.Do(10*time.Second, chromedp.Click(chromedp.ID("stop"))); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(n.Registry().List()) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("stream still listed after the studio stopped: %+v", n.Registry().List())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
