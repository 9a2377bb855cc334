package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/backchannel/backchannel/internal/browsertest"
	"github.com/backchannel/backchannel/internal/cmaf/cmaftest"
	"github.com/backchannel/backchannel/internal/node"
	"github.com/backchannel/backchannel/internal/record"
)

// onNewDocument runs a script in every document the page loads, before the
// page's own scripts.
func onNewDocument(p *browsertest.Page, script string) error {
	return p.Do(10*time.Second, func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := cdp.Call(ctx, t, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: script})
		return chromedp.Void{}, err
	})
}

// hlsState is what the watch page says about its HLS fallback.
const hlsState = `(() => { const b = window.backchannel; if (!b) return null; const v = b.video;
  return {reason: b.hls.reason, engine: b.hls.engine, error: b.hls.player.error, session: !!b.state.session,
    waits: window.__waits || 0, log: b.hls.player.log.slice(0, 3), verr: v.error ? v.error.code + " " + v.error.message : "", t: v.currentTime, ready: v.readyState, paused: v.paused, w: v.videoWidth, h: v.videoHeight}; })()`

type pageHLS struct {
	Reason  string   `json:"reason"`
	Engine  string   `json:"engine"`
	Error   string   `json:"error"`
	Session bool     `json:"session"`
	Log     []string `json:"log"`
	Waits   int      `json:"waits"`
	VErr    string   `json:"verr"`
	T       float64  `json:"t"`
	Ready   int      `json:"ready"`
	Paused  bool     `json:"paused"`
	W       int      `json:"w"`
	H       int      `json:"h"`
}

// onHLSWithin loads the watch page and requires it to be on LL-HLS with
// the given reason within limit of the navigation, then playing.
func onHLSWithin(t *testing.T, p *browsertest.Page, pageURL, reason string, limit time.Duration) {
	t.Helper()
	p.Navigate(pageURL)
	if err := p.WaitFor(2*limit, `window.backchannel && window.backchannel.hls.reason === "`+reason+`"`); err != nil {
		st, _ := browsertest.Eval[*pageHLS](p, hlsState)
		t.Fatalf("not on HLS (%s): %v; page: %+v", reason, err, st)
	}
	// The page's own clock: from the start of navigation to the switch.
	at := time.Duration(browsertest.MustEval[float64](p, `window.backchannel.hls.switchedAt`)) * time.Millisecond
	t.Logf("on HLS (%s) %v after navigation started", reason, at)
	if at > limit {
		t.Errorf("switched to HLS (%s) %v after navigation started, want within %v", reason, at, limit)
	}
	_ = p.Do(5*time.Second, chromedp.Evaluate[chromedp.Void](hlsTimeline))
	if err := p.WaitFor(15*time.Second, `window.backchannel.video.currentTime > 0.5 && !window.backchannel.video.paused`); err != nil {
		st, _ := browsertest.Eval[*pageHLS](p, hlsState)
		t.Fatalf("HLS playback never started: %v; page: %+v", err, st)
	}
}

// hlsTimeline counts the video's waiting events and keeps the last 40
// samples (every 250 ms) of playback position, buffer ahead and hls.js's
// latency, so a failed smoothness check shows what stalled.
const hlsTimeline = `(() => { const b = window.backchannel, v = b.video; window.__waits = 0; window.__timeline = [];
  const t0 = performance.now();
  const note = (what) => { const h = b.hls.player.hls; let ahead = 0;
    for (let i = 0; i < v.buffered.length; i++) if (v.buffered.start(i) <= v.currentTime + 0.1 && v.currentTime <= v.buffered.end(i)) ahead = v.buffered.end(i) - v.currentTime;
    window.__timeline.push(((performance.now() - t0) / 1000).toFixed(2) + "s " + what + " t=" + v.currentTime.toFixed(2) + " ahead=" + ahead.toFixed(2) +
      (h ? " latency=" + (h.latency || 0).toFixed(2) + " target=" + (h.targetLatency || 0).toFixed(2) + " rate=" + v.playbackRate.toFixed(2) : ""));
    if (window.__timeline.length > 40) window.__timeline.shift(); };
  v.addEventListener("waiting", () => { window.__waits++; note("waiting"); });
  v.addEventListener("playing", () => note("playing"));
  setInterval(() => note("tick"), 250); })()`

// advancing requires currentTime to advance with the wall clock for d.
func advancing(t *testing.T, p *browsertest.Page, d time.Duration, minRatio float64) *pageHLS {
	t.Helper()
	time.Sleep(time.Second) // past the start-up buffering
	first := browsertest.MustEval[*pageHLS](p, hlsState)
	start := time.Now()
	time.Sleep(d)
	last := browsertest.MustEval[*pageHLS](p, hlsState)
	wall := time.Since(start).Seconds()
	played := last.T - first.T
	logPlayed(t, first, last, wall)
	if played < wall*minRatio {
		t.Errorf("currentTime advanced %.2f s in %.1f s; %s", played, wall, stallReport(p, last))
	}
	return last
}

// logPlayed logs how far playback went and fails when a WHEP session is
// open beside HLS.
func logPlayed(t *testing.T, first, last *pageHLS, wall float64) {
	t.Helper()
	t.Logf("currentTime %.2f → %.2f over %.1f s of wall time (%s, %dx%d, %d waiting events since start)", first.T, last.T, wall, last.Engine, last.W, last.H, last.Waits)
	if last.Session {
		t.Error("a WHEP session is open while playing HLS")
	}
}

// stallReport is hls.js's error log and the page's timeline (hlsTimeline).
func stallReport(p *browsertest.Page, last *pageHLS) string {
	timeline, _ := browsertest.Eval[[]string](p, `window.__timeline`)
	return fmt.Sprintf("hls.js log %q; timeline:\n%s", last.Log, strings.Join(timeline, "\n"))
}

// keepsPlaying requires currentTime to advance by at least advance within
// limit: a page that fell back to HLS plays, even when a loaded machine
// makes hls.js wait for a part on the way (how smoothly it plays is
// advancing's check, on the requested HLS page).
func keepsPlaying(t *testing.T, p *browsertest.Page, advance, limit time.Duration) {
	t.Helper()
	first := browsertest.MustEval[*pageHLS](p, hlsState)
	start := time.Now()
	err := p.WaitFor(limit, fmt.Sprintf(`window.backchannel.video.currentTime >= %f`, first.T+advance.Seconds()))
	last := browsertest.MustEval[*pageHLS](p, hlsState)
	logPlayed(t, first, last, time.Since(start).Seconds())
	if err != nil {
		t.Errorf("currentTime did not advance %v within %v; %s", advance, limit, stallReport(p, last))
	}
}

// TestHLSInChromium: headless Chromium plays the demo over LL-HLS with
// hls.js for 10 s, and falls back to it by itself within 5 s when
// RTCPeerConnection is absent and when ICE cannot connect; a build without
// hls.js plays WHEP and explains why HLS cannot start; hls.js plays an
// RTSP-like H.264 (B-frames) + AAC stream.
func TestHLSInChromium(t *testing.T) {
	n := startNode(t, true)
	waitLive(t, n, "demo", 15*time.Second)
	b := browsertest.Launch(t)

	t.Run("requested", func(t *testing.T) {
		p := b.NewUser(t)
		onHLSWithin(t, p, n.URL()+"/watch/demo?transport=hls", "requested", 5*time.Second)
		last := advancing(t, p, 10*time.Second, 0.9)
		if last.Engine != "hls.js" || last.W != 640 || last.H != 360 {
			t.Errorf("playing with %q at %dx%d, want hls.js at 640x360", last.Engine, last.W, last.H)
		}
		// Telemetry carries the CMCD keys from hls.js.
		cmcd := browsertest.MustEval[map[string]float64](p, `window.backchannel.hls.addTelemetry({})`)
		for _, k := range []string{"bl", "br", "mtp"} {
			if _, ok := cmcd[k]; !ok {
				t.Errorf("HLS telemetry lacks %s: %v", k, cmcd)
			}
		}
		if cmcd["bl"] <= 0 || cmcd["bl"] > 10000 {
			t.Errorf("buffer length %v ms", cmcd["bl"])
		}
	})

	t.Run("no-webrtc", func(t *testing.T) {
		p := b.NewUser(t)
		if err := onNewDocument(p, `delete window.RTCPeerConnection; delete window.webkitRTCPeerConnection;`); err != nil {
			t.Fatal(err)
		}
		onHLSWithin(t, p, n.URL()+"/watch/demo", "no-webrtc", 5*time.Second)
		keepsPlaying(t, p, 2*time.Second, 6*time.Second)
	})

	t.Run("ice-unreachable", func(t *testing.T) {
		p := b.NewUser(t)
		// Every candidate on both sides is replaced by a closed loopback
		// UDP port (9, discard), and TCP candidates are dropped: neither
		// peer's connectivity checks reach the other, as when UDP is
		// blocked on the way.
		if err := onNewDocument(p, `(() => {
  const rewrite = (sdp) => sdp.split("\r\n").filter(l => !/^a=candidate:.* tcp /i.test(l)).map(l => {
    const m = l.match(/^(a=candidate:\S+ \d+ udp \d+) \S+ \d+ (typ .*)$/i);
    return m ? m[1] + " 127.0.0.1 9 " + m[2] : l;
  }).join("\r\n");
  const proto = RTCPeerConnection.prototype;
  const setRemote = proto.setRemoteDescription;
  proto.setRemoteDescription = function (d) {
    return setRemote.call(this, d && d.sdp ? { type: d.type, sdp: rewrite(d.sdp) } : d);
  };
  const local = Object.getOwnPropertyDescriptor(proto, "localDescription");
  Object.defineProperty(proto, "localDescription", { configurable: true, get() {
    const d = local.get.call(this);
    return d && d.sdp ? { type: d.type, sdp: rewrite(d.sdp) } : d;
  } });
})();`); err != nil {
			t.Fatal(err)
		}
		onHLSWithin(t, p, n.URL()+"/watch/demo", "ice", 5*time.Second)
		keepsPlaying(t, p, 2*time.Second, 6*time.Second)
	})
	t.Run("without-hlsjs", func(t *testing.T) {
		// A build whose vendor/hls.min.js is missing (here: the request for
		// it fails) still plays WHEP, and a page that must use HLS says why
		// it cannot.
		whep := b.NewUser(t)
		if err := blockURL(whep, "*://*:*/static/vendor/*"); err != nil {
			t.Fatal(err)
		}
		whep.Navigate(n.URL() + "/watch/demo")
		if err := whep.WaitFor(20*time.Second, `window.backchannel.state.session && window.backchannel.video.currentTime > 0.5`); err != nil {
			t.Fatalf("WHEP does not play without hls.js: %v", err)
		}
		p := b.NewUser(t)
		if err := blockURL(p, "*://*:*/static/vendor/*"); err != nil {
			t.Fatal(err)
		}
		p.Navigate(n.URL() + "/watch/demo?transport=hls")
		if err := p.WaitFor(10*time.Second, `document.getElementById("overlay").textContent.includes("make web")`); err != nil {
			st, _ := browsertest.Eval[*pageHLS](p, hlsState)
			overlay, _ := browsertest.Eval[string](p, `document.getElementById("overlay").textContent`)
			t.Fatalf("no clear error without hls.js: %v; overlay %q; page %+v", err, overlay, st)
		}
	})

	t.Run("rtsp-like-bframes-aac", func(t *testing.T) {
		// What an RTSP publisher with libx264 defaults (B-frames) and AAC
		// sends, fed into the node's registry from the RTP packetizers (the
		// RTSP server is on another branch; once merged, an `ffmpeg -f
		// rtsp` publish replaces the feeder).
		src := cmaftest.X264AAC(t, 4)
		pub := cmaftest.Publish(t, n.Registry(), "cam", src)
		ctx, cancel := context.WithCancel(context.Background())
		fed := make(chan struct{})
		go func() { defer close(fed); _ = cmaftest.Feed(ctx, pub, cmaftest.Loop(src, 10), 1) }()
		defer func() { cancel(); <-fed; pub.Close() }()
		p := b.NewUser(t)
		onHLSWithin(t, p, n.URL()+"/watch/cam?transport=hls", "requested", 5*time.Second)
		last := advancing(t, p, 5*time.Second, 0.9)
		if last.W != 640 || last.H != 360 {
			t.Errorf("playing %dx%d, want 640x360", last.W, last.H)
		}
	})
}

// blockURL makes every request matching pattern (URLPattern syntax) fail.
func blockURL(p *browsertest.Page, pattern string) error {
	return p.Do(10*time.Second, func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		if _, err := cdp.Call(ctx, t, network.Enable, network.EnableParams{}); err != nil {
			return chromedp.Void{}, err
		}
		_, err := cdp.Call(ctx, t, network.SetBlockedURLs, network.SetBlockedURLsParams{
			URLPatterns: []*network.BlockPattern{{URLPattern: pattern, Block: true}}})
		return chromedp.Void{}, err
	})
}

// TestLLHLSWithFFmpeg: ffprobe reads the demo's LL-HLS from a whole node
// (codecs, size, frame rate, monotonic timestamps) and `ffmpeg -i
// …/index.m3u8 -t 10 -f null -` decodes it without a message.
func TestLLHLSWithFFmpeg(t *testing.T) {
	n := startNode(t, true)
	waitLive(t, n, "demo", 15*time.Second)
	u := n.URL() + "/hls/demo/index.m3u8"
	res, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(body), `CODECS="avc1.42c01e,opus"`) {
		t.Fatalf("multivariant: %d\n%s", res.StatusCode, body)
	}
	time.Sleep(3 * time.Second) // a few segments to start from
	p := cmaftest.FFprobe(t, u, "-read_intervals", "%+2")
	v, _ := p.Stream("video")
	a, _ := p.Stream("audio")
	if v.CodecName != "h264" || v.Width != 640 || v.Height != 360 || v.FrameRate() != 30 || a.CodecName != "opus" {
		t.Errorf("ffprobe: video %+v audio %+v", v, a)
	}
	cmaftest.CheckMonotonic(t, p)
	begin := time.Now()
	if msg := cmaftest.Decode(t, u, "-t", "10"); msg != "" {
		t.Errorf("ffmpeg -i %s -t 10: %s", u, msg)
	}
	t.Logf("ffmpeg decoded 10 s of live LL-HLS in %v", time.Since(begin).Round(time.Millisecond))
}

// TestRecordingThroughAPIAndRestart: the operator records the demo through
// the API; the recording is listed and replays as VOD HLS that ffprobe and
// ffmpeg accept, also from a new node on the same data directory.
func TestRecordingThroughAPIAndRestart(t *testing.T) {
	dir := t.TempDir()
	n := startNodeIn(t, dir, true)
	waitLive(t, n, "demo", 15*time.Second)
	var started record.Recording
	if code := apiDo(t, n, "POST", "/streams/demo/recording", `{"action":"start"}`, &started); code != 201 {
		t.Fatalf("start recording: %d", code)
	}
	time.Sleep(5 * time.Second)
	var stopped record.Recording
	if code := apiDo(t, n, "POST", "/streams/demo/recording", `{"action":"stop"}`, &stopped); code != 200 {
		t.Fatalf("stop recording: %d", code)
	}
	if stopped.State != record.StateComplete || stopped.Segments < 1 || stopped.DurationMS < 3000 {
		t.Fatalf("stopped recording %+v", stopped)
	}
	checkVODPlaylist(t, n.URL()+stopped.Playlist)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	n2 := startNodeIn(t, dir, false)
	var listed struct {
		Recordings []record.Recording `json:"recordings"`
	}
	if code := apiGet(t, n2, "/recordings", &listed); code != 200 || len(listed.Recordings) != 1 || listed.Recordings[0].ID != started.ID {
		t.Fatalf("recordings after restart: %d %+v", code, listed)
	}
	checkVODPlaylist(t, n2.URL()+listed.Recordings[0].Playlist)
}

func checkVODPlaylist(t *testing.T, u string) {
	t.Helper()
	p := cmaftest.FFprobe(t, u)
	v, _ := p.Stream("video")
	a, _ := p.Stream("audio")
	if v.CodecName != "h264" || v.Width != 640 || v.Height != 360 || v.FrameRate() != 30 || a.CodecName != "opus" {
		t.Errorf("VOD ffprobe: video %+v audio %+v", v, a)
	}
	if n := cmaftest.CheckMonotonic(t, p)[v.Index]; n < 90 {
		t.Errorf("VOD has %d video frames", n)
	}
	if msg := cmaftest.Decode(t, u); msg != "" {
		t.Errorf("ffmpeg decode of %s: %s", u, msg)
	}
}

// startNodeIn is startNode with a given data directory.
func startNodeIn(t *testing.T, dir string, demo bool) *node.Node {
	t.Helper()
	n, err := node.Start(context.Background(), node.Config{
		HTTPAddr: "127.0.0.1:0", ICEAddr: "127.0.0.1:0", DataDir: dir, Demo: demo, NodeID: "e2e",
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatalf("start node: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
	})
	return n
}

// apiDo sends an operator API request with a JSON body and decodes the answer.
func apiDo(t *testing.T, n *node.Node, method, path, body string, v any) int {
	t.Helper()
	req, _ := http.NewRequest(method, n.URL()+"/api/v1"+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+n.OperatorKey())
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode < 300 && v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%s %s: %v in %s", method, path, err, b)
		}
	}
	if res.StatusCode >= 300 {
		t.Logf("%s %s: %d %s", method, path, res.StatusCode, b)
	}
	return res.StatusCode
}

// TestStudioPublishPlaysOverHLS: Chromium publishes its fake camera from
// /studio over WHIP; the stream's LL-HLS is read by ffprobe (size, frame
// rate, monotonic timestamps), decoded by ffmpeg and played by hls.js.
func TestStudioPublishPlaysOverHLS(t *testing.T) {
	n := startNode(t, false)
	b := browsertest.Launch(t)
	studio := b.NewPage(t)
	studio.Navigate(n.URL() + "/studio?stream=cam&key=" + url.QueryEscape(n.PublishKey()))
	if err := studio.Do(10*time.Second, chromedp.Click(chromedp.ID("start"))); err != nil {
		t.Fatal(err)
	}
	if err := studio.WaitFor(20*time.Second, `window.backchannel.state.status === "Live"`); err != nil {
		t.Fatalf("studio never went live: %v", err)
	}
	waitLive(t, n, "cam", 10*time.Second)
	u := n.URL() + "/hls/cam/index.m3u8"
	res, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	mv, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("multivariant: %d %s", res.StatusCode, mv)
	}
	t.Logf("studio multivariant:\n%s", mv)
	time.Sleep(3 * time.Second)
	p := cmaftest.FFprobe(t, u, "-read_intervals", "%+2")
	v, _ := p.Stream("video")
	a, _ := p.Stream("audio")
	if v.CodecName != "h264" || v.Width == 0 || v.Height == 0 || a.CodecName != "opus" {
		t.Errorf("ffprobe: video %+v audio %+v", v, a)
	}
	if !strings.Contains(string(mv), "RESOLUTION="+strconv.Itoa(v.Width)+"x"+strconv.Itoa(v.Height)) {
		t.Errorf("multivariant RESOLUTION does not match ffprobe's %dx%d", v.Width, v.Height)
	}
	// A camera's frames come at a variable rate: ffprobe's r_frame_rate is a
	// guess from the smallest interval; the rate is what the packets say.
	if fps := packetRate(p, v); fps < 10 || fps > 31 {
		t.Errorf("frame rate from ffprobe's packets %.1f", fps)
	}
	cmaftest.CheckMonotonic(t, p)
	if msg := cmaftest.Decode(t, u, append([]string{"-t", "3"}, cmaftest.VFR...)...); msg != "" {
		t.Errorf("ffmpeg decode: %s", msg)
	}
	viewer := b.NewUser(t)
	onHLSWithin(t, viewer, n.URL()+"/watch/cam?transport=hls", "requested", 5*time.Second)
	// Chromium encodes the camera and decodes it again on two shared
	// cores: the publisher itself stutters at times.
	advancing(t, viewer, 5*time.Second, 0.6)
}

// packetRate is a stream's frame rate from its packets' presentation times.
func packetRate(p cmaftest.Probe, v cmaftest.Stream) float64 {
	num, den, _ := strings.Cut(v.TimeBase, "/")
	n, _ := strconv.ParseFloat(num, 64)
	d, _ := strconv.ParseFloat(den, 64)
	var lo, hi int64
	count := 0
	for _, pk := range p.Packets {
		if pk.StreamIndex != v.Index || pk.PTS == nil {
			continue
		}
		if count == 0 || *pk.PTS < lo {
			lo = *pk.PTS
		}
		if count == 0 || *pk.PTS > hi {
			hi = *pk.PTS
		}
		count++
	}
	if count < 2 || hi == lo || d == 0 {
		return 0
	}
	return float64(count-1) / (float64(hi-lo) * n / d)
}
