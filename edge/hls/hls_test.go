package hls_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/backchannel/backchannel/edge/hls"
	"github.com/backchannel/backchannel/internal/cmaf/cmaftest"
	"github.com/backchannel/backchannel/internal/fmp4"
	"github.com/backchannel/backchannel/internal/media"
)

type harness struct {
	reg     *media.Registry
	srv     *hls.Server
	http    *httptest.Server
	metrics *prometheus.Registry
	pub     *media.Publication
	cancel  context.CancelFunc
	fed     sync.WaitGroup
}

// start serves HLS for a registry where stream "live" plays src in a loop
// in real time.
func start(t *testing.T, src *cmaftest.Source, cfg hls.Config) *harness {
	t.Helper()
	h := &harness{reg: media.NewRegistry("test"), metrics: prometheus.NewRegistry()}
	cfg.Registry, cfg.Metrics = h.reg, h.metrics
	srv, err := hls.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.srv = srv
	mux := http.NewServeMux()
	mux.Handle("/hls/", srv.Handler())
	h.http = httptest.NewServer(mux)
	if src != nil {
		h.pub = cmaftest.Publish(t, h.reg, "live", src)
		ctx, cancel := context.WithCancel(context.Background())
		h.cancel = cancel
		h.fed.Add(1)
		go func() {
			defer h.fed.Done()
			loop := cmaftest.Loop(src, 30)
			_ = cmaftest.Feed(ctx, h.pub, loop, 1)
		}()
	}
	t.Cleanup(func() {
		if h.cancel != nil {
			h.cancel()
		}
		h.fed.Wait()
		h.http.Close()
		srv.Close()
		h.reg.Close()
	})
	return h
}

type response struct {
	status int
	header http.Header
	body   string
	took   time.Duration
}

func (h *harness) get(t *testing.T, path string) response {
	t.Helper()
	return do(t, http.MethodGet, h.http.URL+path)
}

func do(t *testing.T, method, url string) response {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	begin := time.Now()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return response{status: res.StatusCode, header: res.Header, body: string(b), took: time.Since(begin)}
}

var (
	partRE = regexp.MustCompile(`#EXT-X-PART:DURATION=([0-9.]+),URI="part-(\w+)-(\d+)-(\d+)\.mp4"(,INDEPENDENT=YES)?`)
	segRE  = regexp.MustCompile(`#EXTINF:([0-9.]+),\nseg-(\w+)-(\d+)\.mp4`)
	hintRE = regexp.MustCompile(`#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part-(\w+)-(\d+)-(\d+)\.mp4"`)
)

type playlistPart struct {
	msn, idx    int
	duration    float64
	independent bool
	uri         string
}

func parts(body string) []playlistPart {
	var out []playlistPart
	for _, m := range partRE.FindAllStringSubmatch(body, -1) {
		d, _ := strconv.ParseFloat(m[1], 64)
		msn, _ := strconv.Atoi(m[3])
		idx, _ := strconv.Atoi(m[4])
		out = append(out, playlistPart{msn: msn, idx: idx, duration: d, independent: m[5] != "", uri: fmt.Sprintf("part-%s-%s-%s.mp4", m[2], m[3], m[4])})
	}
	return out
}

func tagValue(body, tag string) string {
	for line := range strings.SplitSeq(body, "\n") {
		if v, ok := strings.CutPrefix(line, tag+":"); ok {
			return v
		}
	}
	return ""
}

// TestLivePlaylists: the multivariant and media playlists of a WHIP-like
// stream carry the LL-HLS tags, its parts and segments are served, and
// every part named INDEPENDENT starts with a keyframe.
func TestLivePlaylists(t *testing.T) {
	h := start(t, cmaftest.DemoClip(t, 1), hls.Config{})

	mv := h.get(t, "/hls/live/index.m3u8")
	if mv.status != 200 {
		t.Fatalf("multivariant: %d %s", mv.status, mv.body)
	}
	if ct := mv.header.Get("Content-Type"); ct != hls.ContentTypePlaylist {
		t.Errorf("content type %q", ct)
	}
	if mv.header.Get("Access-Control-Allow-Origin") != "*" || mv.header.Get("Cache-Control") != "no-cache" {
		t.Errorf("headers %v", mv.header)
	}
	inf := tagValue(mv.body, "#EXT-X-STREAM-INF")
	for _, want := range []string{`CODECS="avc1.42c01e,opus"`, "RESOLUTION=640x360", "BANDWIDTH="} {
		if !strings.Contains(inf, want) {
			t.Errorf("EXT-X-STREAM-INF %q lacks %s", inf, want)
		}
	}
	if !strings.HasSuffix(strings.TrimSpace(mv.body), "\nmedia.m3u8") {
		t.Errorf("multivariant does not point at media.m3u8:\n%s", mv.body)
	}

	media := h.get(t, "/hls/live/media.m3u8")
	if media.status != 200 || media.header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("media playlist: %d %v", media.status, media.header)
	}
	body := media.body
	for tag, want := range map[string]string{
		"#EXT-X-TARGETDURATION": "1",
		"#EXT-X-SERVER-CONTROL": "CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.600",
		"#EXT-X-PART-INF":       "PART-TARGET=0.200",
		"#EXT-X-VERSION":        "9",
	} {
		if got := tagValue(body, tag); got != want {
			t.Errorf("%s:%s, want %s", tag, got, want)
		}
	}
	for _, tag := range []string{"#EXT-X-PROGRAM-DATE-TIME:", "#EXT-X-MAP:URI=", "#EXT-X-PRELOAD-HINT:TYPE=PART", "#EXT-X-MEDIA-SEQUENCE:"} {
		if !strings.Contains(body, tag) {
			t.Errorf("media playlist lacks %s:\n%s", tag, body)
		}
	}
	ps := parts(body)
	if len(ps) < 5 {
		t.Fatalf("%d parts listed:\n%s", len(ps), body)
	}
	mapURI := regexp.MustCompile(`#EXT-X-MAP:URI="([^"]+)"`).FindStringSubmatch(body)[1]
	init := h.get(t, "/hls/live/"+mapURI)
	if init.status != 200 || init.header.Get("Content-Type") != hls.ContentTypeMP4 || !strings.Contains(init.header.Get("Cache-Control"), "immutable") {
		t.Fatalf("init: %d %v", init.status, init.header)
	}
	tracks, err := fmp4.ParseInit([]byte(init.body))
	if err != nil || len(tracks) != 2 || tracks[0].SampleEntry != "avc1" || tracks[1].SampleEntry != "Opus" {
		t.Fatalf("init tracks %+v: %v", tracks, err)
	}
	independent := 0
	for _, p := range ps {
		r := h.get(t, "/hls/live/"+p.uri)
		if r.status != 200 {
			t.Fatalf("%s: %d", p.uri, r.status)
		}
		frags, err := fmp4.ParseFragments([]byte(r.body), fmp4.Defaults(tracks))
		if err != nil || len(frags) != 1 {
			t.Fatalf("%s: %d fragments, %v", p.uri, len(frags), err)
		}
		for _, tf := range frags[0].Tracks {
			if tf.TrackID == tracks[0].ID && p.independent != tf.Samples[0].IsSync() {
				t.Errorf("%s: INDEPENDENT=%v but first video sample sync=%v", p.uri, p.independent, tf.Samples[0].IsSync())
			}
		}
		if p.independent {
			independent++
		}
		if !p.independent && p.duration < 0.17 || p.duration > 0.22 {
			t.Errorf("%s lasts %.3f s", p.uri, p.duration)
		}
	}
	if independent == 0 {
		t.Error("no independent part listed")
	}
	for _, m := range segRE.FindAllStringSubmatch(body, -1) {
		r := h.get(t, fmt.Sprintf("/hls/live/seg-%s-%s.mp4", m[2], m[3]))
		if r.status != 200 || len(r.body) == 0 {
			t.Errorf("segment %s: %d", m[3], r.status)
		}
		if d, _ := strconv.ParseFloat(m[1], 64); d < 0.95 || d > 1.05 {
			t.Errorf("segment %s lasts %.3f s, want 1 s (the clip's GOP)", m[3], d)
		}
	}

	// A player starting PART-HOLD-BACK from the live edge finds an
	// independent part at or before that point within the listed parts.
	var total float64
	for _, p := range ps {
		total += p.duration
	}
	pos, found := total, false
	for i := len(ps) - 1; i >= 0 && !found; i-- {
		pos -= ps[i].duration
		found = ps[i].independent && total-pos >= 0.6
	}
	if !found {
		t.Errorf("no independent part at least PART-HOLD-BACK from the live edge:\n%s", body)
	}
}

// TestBlockingReload: _HLS_msn/_HLS_part hold the request until that part
// is listed; requests far ahead are refused with 400; the preload hint
// part is served as soon as it exists.
func TestBlockingReload(t *testing.T) {
	h := start(t, cmaftest.DemoClip(t, 1), hls.Config{})
	first := h.get(t, "/hls/live/media.m3u8")
	if first.status != 200 {
		t.Fatalf("%d %s", first.status, first.body)
	}
	hint := hintRE.FindStringSubmatch(first.body)
	if hint == nil {
		t.Fatalf("no preload hint:\n%s", first.body)
	}
	msn, _ := strconv.Atoi(hint[2])
	idx, _ := strconv.Atoi(hint[3])

	// The hinted part, fetched now, arrives when it is cut.
	partRes := make(chan response, 1)
	go func() {
		partRes <- do(t, http.MethodGet, fmt.Sprintf("%s/hls/live/part-%s-%d-%d.mp4", h.http.URL, hint[1], msn, idx))
	}()

	r := h.get(t, fmt.Sprintf("/hls/live/media.m3u8?_HLS_msn=%d&_HLS_part=%d", msn, idx))
	if r.status != 200 {
		t.Fatalf("blocking reload: %d %s", r.status, r.body)
	}
	if r.took < 20*time.Millisecond || r.took > 600*time.Millisecond {
		t.Errorf("blocking reload took %v, want about one part (200 ms)", r.took)
	}
	if !strings.Contains(r.body, fmt.Sprintf("part-%s-%d-%d.mp4", hint[1], msn, idx)) {
		t.Errorf("blocking response lacks the part it waited for:\n%s", r.body)
	}
	if !strings.HasPrefix(r.header.Get("Cache-Control"), "public, max-age=") {
		t.Errorf("blocking response Cache-Control %q", r.header.Get("Cache-Control"))
	}
	pr := <-partRes
	if pr.status != 200 || len(pr.body) == 0 {
		t.Errorf("preload-hinted part: %d", pr.status)
	}

	// An already listed part answers at once.
	r = h.get(t, fmt.Sprintf("/hls/live/media.m3u8?_HLS_msn=%d&_HLS_part=%d", msn, idx))
	if r.status != 200 || r.took > 100*time.Millisecond {
		t.Errorf("satisfied reload: %d after %v", r.status, r.took)
	}
	// A whole segment: held until it is complete.
	r = h.get(t, fmt.Sprintf("/hls/live/media.m3u8?_HLS_msn=%d", msn+1))
	if r.status != 200 || !regexp.MustCompile(fmt.Sprintf(`seg-%s-%d\.mp4`, hint[1], msn+1)).MatchString(r.body) {
		t.Errorf("segment reload: %d\n%s", r.status, r.body)
	}

	for _, c := range []struct {
		query  string
		status int
	}{
		{fmt.Sprintf("_HLS_msn=%d", msn+10), 400},
		{"_HLS_part=1", 400},
		{"_HLS_msn=x", 400},
		{"_HLS_msn=1&_HLS_part=-1", 400},
	} {
		if r := h.get(t, "/hls/live/media.m3u8?"+c.query); r.status != c.status {
			t.Errorf("?%s: %d, want %d (%s)", c.query, r.status, c.status, r.body)
		} else if !strings.Contains(r.header.Get("Content-Type"), "problem+json") {
			t.Errorf("?%s: content type %q, want problem details", c.query, r.header.Get("Content-Type"))
		}
	}
}

// TestErrorsAndCORS: unknown streams, bad names and paths, methods, and
// preflights.
func TestErrorsAndCORS(t *testing.T) {
	h := start(t, nil, hls.Config{})
	for _, c := range []struct {
		method, path string
		status       int
	}{
		{"GET", "/hls/nobody/index.m3u8", 404},
		{"GET", "/hls/nobody/media.m3u8", 404},
		{"GET", "/hls/bad%20name/index.m3u8", 400},
		{"GET", "/hls/nobody/seg-abc-1.mp4", 404},
		{"GET", "/hls/nobody/part-abc-x-1.mp4", 404},
		{"GET", "/hls/nobody/whatever.txt", 404},
		{"GET", "/hls/", 404},
		{"POST", "/hls/nobody/index.m3u8", 405},
		{"OPTIONS", "/hls/nobody/index.m3u8", 204},
	} {
		r := do(t, c.method, h.http.URL+c.path)
		if r.status != c.status {
			t.Errorf("%s %s: %d, want %d", c.method, c.path, r.status, c.status)
		}
		if r.header.Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("%s %s: no CORS header", c.method, c.path)
		}
		if c.method == "OPTIONS" && !strings.Contains(r.header.Get("Access-Control-Allow-Methods"), "GET") {
			t.Errorf("preflight: %v", r.header)
		}
	}
	// A VP8 stream cannot be packaged.
	cmaftest.Publish(t, h.reg, "vp8", &cmaftest.Source{Codecs: []media.Codec{{MimeType: media.MimeVP8, ClockRate: 90000}}})
	if r := h.get(t, "/hls/vp8/index.m3u8"); r.status != 415 {
		t.Errorf("VP8 stream: %d, want 415", r.status)
	}
}

// TestOneMuxerForManyViewers: concurrent viewers share one packager, and
// every blocked viewer gets the same playlist bytes.
func TestOneMuxerForManyViewers(t *testing.T) {
	h := start(t, cmaftest.DemoClip(t, 1), hls.Config{})
	first := h.get(t, "/hls/live/media.m3u8")
	hint := hintRE.FindStringSubmatch(first.body)
	var wg sync.WaitGroup
	bodies := make([]string, 50)
	for i := range bodies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bodies[i] = do(t, "GET", fmt.Sprintf("%s/hls/live/media.m3u8?_HLS_msn=%s&_HLS_part=%s", h.http.URL, hint[2], hint[3])).body
		}()
	}
	wg.Wait()
	for i, b := range bodies {
		if !strings.Contains(b, "part-"+hint[1]+"-"+hint[2]+"-"+hint[3]) {
			t.Fatalf("viewer %d did not get the part it waited for", i)
		}
	}
	if n := counterValue(t, h.metrics, "backchannel_hls_packagers_started_total"); n != 1 {
		t.Errorf("%v packagers started for 51 viewers of one stream, want 1", n)
	}
	if h.srv.Muxers() != 1 {
		t.Errorf("%d packagers", h.srv.Muxers())
	}
}

func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestIdleAndEndedPackagersClose: a packager nobody reads is closed after
// IdleTimeout (its sinks detached), and one whose stream ended is gone.
func TestIdleAndEndedPackagersClose(t *testing.T) {
	h := start(t, cmaftest.DemoClip(t, 1), hls.Config{IdleTimeout: 1500 * time.Millisecond})
	if r := h.get(t, "/hls/live/index.m3u8"); r.status != 200 {
		t.Fatalf("%d", r.status)
	}
	st, _ := h.reg.Lookup("live")
	vt, _ := st.Track(media.KindVideo)
	if vt.SinkCount() != 1 || h.srv.Muxers() != 1 {
		t.Fatalf("%d sinks, %d packagers", vt.SinkCount(), h.srv.Muxers())
	}
	deadline := time.Now().Add(5 * time.Second)
	for h.srv.Muxers() != 0 || vt.SinkCount() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("idle packager still there: %d packagers, %d sinks", h.srv.Muxers(), vt.SinkCount())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Again, then end the stream.
	if r := h.get(t, "/hls/live/index.m3u8"); r.status != 200 {
		t.Fatalf("%d", r.status)
	}
	h.cancel()
	h.fed.Wait()
	h.reg.SetOfflineGrace(0)
	h.pub.Close()
	deadline = time.Now().Add(5 * time.Second)
	for h.srv.Muxers() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("packager of an ended stream still there")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r := h.get(t, "/hls/live/media.m3u8"); r.status != 404 {
		t.Errorf("ended stream: %d, want 404", r.status)
	}
}

// TestPackagerInUseIsNotIdle: a blocking playlist request that outlasts
// IdleTimeout keeps its packager (and the media names the player holds).
func TestPackagerInUseIsNotIdle(t *testing.T) {
	h := start(t, cmaftest.DemoClip(t, 1), hls.Config{IdleTimeout: 300 * time.Millisecond})
	first := h.get(t, "/hls/live/media.m3u8")
	hint := hintRE.FindStringSubmatch(first.body)
	if first.status != 200 || hint == nil {
		t.Fatalf("%d:\n%s", first.status, first.body)
	}
	msn, _ := strconv.Atoi(hint[2])
	r := h.get(t, fmt.Sprintf("/hls/live/media.m3u8?_HLS_msn=%d", msn+1))
	if r.took < 300*time.Millisecond {
		t.Fatalf("the request waited %v, not longer than IdleTimeout: nothing tested", r.took)
	}
	if r.status != 200 || !strings.Contains(r.body, fmt.Sprintf("seg-%s-%d.mp4", hint[1], msn+1)) {
		t.Fatalf("after %v: %d, want segment %d of the same packager (%s):\n%s", r.took, r.status, msn+1, hint[1], r.body)
	}
	if n := h.srv.Muxers(); n != 1 {
		t.Fatalf("%d packagers right after the request", n)
	}
}

// TestFFmpegReadsLiveHLS: ffprobe reads the live playlist's init and
// segments (codecs, size, frame rate, monotonic timestamps) and ffmpeg
// decodes it without a message.
func TestFFmpegReadsLiveHLS(t *testing.T) {
	h := start(t, cmaftest.DemoClip(t, 1), hls.Config{})
	url := h.http.URL + "/hls/live/index.m3u8"
	if r := h.get(t, "/hls/live/index.m3u8"); r.status != 200 {
		t.Fatalf("%d", r.status)
	}
	time.Sleep(3 * time.Second) // a few segments
	CheckFFmpegHLS(t, url, "h264", "opus", 640, 360, 30, 3)
}

// CheckFFmpegHLS runs ffprobe and ffmpeg on an HLS URL and checks the
// video and audio codecs, the picture size, the frame rate and monotonic
// timestamps; seconds bounds ffmpeg's decode.
func CheckFFmpegHLS(t *testing.T, url, vcodec, acodec string, w, hgt int, fps float64, seconds int) {
	t.Helper()
	p := cmaftest.FFprobe(t, url, "-read_intervals", "%+2")
	v, ok := p.Stream("video")
	if !ok || v.CodecName != vcodec || v.Width != w || v.Height != hgt || v.FrameRate() != fps {
		t.Errorf("ffprobe video %+v, want %s %dx%d@%v", v, vcodec, w, hgt, fps)
	}
	a, ok := p.Stream("audio")
	if !ok || a.CodecName != acodec {
		t.Errorf("ffprobe audio %+v, want %s", a, acodec)
	}
	counts := cmaftest.CheckMonotonic(t, p)
	if counts[v.Index] < 30 {
		t.Errorf("ffprobe read %d video packets", counts[v.Index])
	}
	if msg := cmaftest.Decode(t, url, "-t", strconv.Itoa(seconds)); msg != "" {
		t.Errorf("ffmpeg decode of %s: %s", url, msg)
	}
}

// TestFFmpegReadsRTSPLikeH264BFramesAAC: the source an RTSP camera or
// `ffmpeg -f rtsp` with libx264 defaults sends (H.264 with B-frames,
// sprop-parameter-sets, AAC as mpeg4-generic), built with the RTP
// packetizers alone, packaged as LL-HLS: ffprobe sees H.264 with B-frames
// and AAC at 640x360@30 with monotonic timestamps, ffmpeg decodes it.
func TestFFmpegReadsRTSPLikeH264BFramesAAC(t *testing.T) {
	h := start(t, cmaftest.X264AAC(t, 4), hls.Config{})
	url := h.http.URL + "/hls/live/index.m3u8"
	r := h.get(t, "/hls/live/index.m3u8")
	if r.status != 200 || !strings.Contains(r.body, `,mp4a.40.2"`) || !strings.Contains(r.body, `CODECS="avc1.64`) {
		t.Fatalf("multivariant: %d\n%s", r.status, r.body)
	}
	time.Sleep(3 * time.Second)
	CheckFFmpegHLS(t, url, "h264", "aac", 640, 360, 30, 3)
	p := cmaftest.FFprobe(t, url, "-read_intervals", "%+2")
	if v, _ := p.Stream("video"); v.HasBFrames == 0 {
		t.Errorf("ffprobe sees no B-frames: %+v", v)
	}
}

// TestContentSteeringAndConfig: with a steering server configured the
// multivariant playlist names it and this edge's pathway; impossible
// targets are refused.
func TestContentSteeringAndConfig(t *testing.T) {
	h := start(t, cmaftest.DemoClip(t, 1), hls.Config{SteeringURI: "https://steer.example/{stream}.json", PathwayID: "edge-1"})
	r := h.get(t, "/hls/live/index.m3u8")
	if r.status != 200 || !strings.Contains(r.body, `#EXT-X-CONTENT-STEERING:SERVER-URI="https://steer.example/live.json",PATHWAY-ID="edge-1"`) ||
		!strings.Contains(tagValue(r.body, "#EXT-X-STREAM-INF"), `PATHWAY-ID="edge-1"`) {
		t.Errorf("multivariant with steering: %d\n%s", r.status, r.body)
	}
	if _, err := hls.New(hls.Config{Registry: h.reg, PartTarget: time.Second, SegmentTarget: 500 * time.Millisecond}); err == nil {
		t.Error("a segment target below the part target was accepted")
	}
	if _, err := hls.New(hls.Config{}); err == nil {
		t.Error("a server without a registry was accepted")
	}
}

// TestBlockingReloadTimesOut: when the publisher stops sending, a blocked
// reload is answered 503 with Retry-After after three target durations.
func TestBlockingReloadTimesOut(t *testing.T) {
	h := start(t, cmaftest.DemoClip(t, 1), hls.Config{})
	first := h.get(t, "/hls/live/media.m3u8")
	if first.status != 200 {
		t.Fatalf("%d", first.status)
	}
	h.cancel()
	h.fed.Wait()
	time.Sleep(300 * time.Millisecond)
	last := h.get(t, "/hls/live/media.m3u8")
	hint := hintRE.FindStringSubmatch(last.body)
	r := h.get(t, fmt.Sprintf("/hls/live/media.m3u8?_HLS_msn=%s&_HLS_part=%s", hint[2], hint[3]))
	if r.status != 503 || r.header.Get("Retry-After") == "" || r.took < 2900*time.Millisecond || r.took > 4*time.Second {
		t.Errorf("stalled blocking reload: %d after %v (Retry-After %q), want 503 after 3 s", r.status, r.took, r.header.Get("Retry-After"))
	}
}
