package edge_test

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/backchannel/backchannel/internal/whipclient/whiptest"
)

// firstFrameJS plays a WHEP URL in a new peer connection and resolves with
// the milliseconds from the call to the first video frame presented
// (requestVideoFrameCallback) and to framesDecoded > 0 in the stats.
const firstFrameJS = `<script>
async function firstFrame(url) {
  const t0 = performance.now();
  const pc = new RTCPeerConnection();
  pc.addTransceiver('video', {direction: 'recvonly'});
  const video = document.createElement('video');
  video.muted = true; video.autoplay = true; video.playsInline = true;
  document.body.appendChild(video);
  const shown = new Promise(r => video.requestVideoFrameCallback(() => r(performance.now() - t0)));
  pc.ontrack = e => { video.srcObject = e.streams[0] || new MediaStream([e.track]); };
  await negotiate(pc, url, {});
  let decoded = 0;
  const deadline = t0 + 10000;
  while (performance.now() < deadline) {
    for (const r of (await pc.getStats()).values()) {
      if (r.type === 'inbound-rtp' && r.kind === 'video' && r.framesDecoded > 0) decoded = performance.now() - t0;
    }
    if (decoded) break;
    await new Promise(r => setTimeout(r, 10));
  }
  const frame = await Promise.race([shown, new Promise(r => setTimeout(() => r(0), 5000))]);
  pc.close(); video.remove(); // ten decoders at once would only load the shared machine
  return {decoded: Math.round(decoded), shown: Math.round(frame)};
}
</script>`

// Fast start in a real browser: Chromium viewers join the keyint-250
// ffmpeg stream at random moments inside its GOP; each decodes and shows
// a first frame (framesDecoded > 0, requestVideoFrameCallback) from the
// GOP cache instead of waiting up to 10 s for the next keyframe. The bound
// here is loose; the figures are logged.
func TestFastStartChromiumKeyint250(t *testing.T) {
	_, srv, _, _, _, live := startKeyint250(t)
	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write([]byte(whiptest.PlayerPage + firstFrameJS))
	}))
	defer page.Close()
	browser := whiptest.Chrome(t)
	if err := chromedp.Do(browser, chromedp.Navigate(page.URL)); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	// Ten joins spread over the first GOP (a keyframe every 10 s), each at
	// a random moment in its own 400 ms window.
	var joins []time.Duration
	for i := range 10 {
		joins = append(joins, time.Second+time.Duration(i)*800*time.Millisecond+time.Duration(r.Int64N(int64(400*time.Millisecond))))
	}
	type result struct{ Decoded, Shown float64 }
	var shown []time.Duration
	for i, at := range joins {
		time.Sleep(time.Until(live.Add(at)))
		res, err := chromedp.Run(browser, chromedp.Evaluate[result](fmt.Sprintf("firstFrame(%q)", srv.WHEP("ff")), chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatalf("viewer %d: %v", i, err)
		}
		t.Logf("Chromium viewer %d joined %v into the GOP: framesDecoded > 0 after %v ms, first frame shown after %v ms",
			i, at.Round(time.Millisecond), res.Decoded, res.Shown)
		if res.Decoded == 0 || res.Shown == 0 {
			t.Fatalf("viewer %d decoded no frame (%+v)", i, res)
		}
		shown = append(shown, time.Duration(res.Shown)*time.Millisecond)
	}
	if worst := slices.Max(shown); worst > 3*time.Second {
		t.Fatalf("slowest first frame in Chromium %v", worst)
	}
	if n := metricValue(t, srv.EdgeMetrics, "backchannel_whep_fast_starts_total"); n != float64(len(joins)) {
		t.Fatalf("%v of %d Chromium viewers started from the GOP cache", n, len(joins))
	}
}
