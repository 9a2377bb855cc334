package application_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/backchannel/backchannel/application"
	"github.com/backchannel/backchannel/connection"
	"github.com/backchannel/backchannel/internal/bus"
	"github.com/backchannel/backchannel/internal/identity"
	"github.com/backchannel/backchannel/internal/keys"
	"github.com/backchannel/backchannel/internal/media"
)

const operatorKey = "op-key"

// countingBus counts publishes per topic, to check how many requests the
// application tier makes.
type countingBus struct {
	bus.Bus
	mu     sync.Mutex
	counts map[string]int
}

func (b *countingBus) Publish(ctx context.Context, topic string, msgs ...[]byte) error {
	b.mu.Lock()
	b.counts[topic]++
	b.mu.Unlock()
	return b.Bus.Publish(ctx, topic, msgs...)
}

func (b *countingBus) count(topic string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.counts[topic]
}

// cluster is an application server and two connection servers on real
// sockets, wired by a memory bus: the embedded deployment, with two
// connection servers to show per-server fan-out.
type cluster struct {
	t    *testing.T
	bus  *countingBus
	app  *application.Server
	api  *httptest.Server
	conn map[string]*connection.Server
	ws   map[string]*httptest.Server
}

func newCluster(t *testing.T, opts ...func(*application.Config)) *cluster {
	t.Helper()
	mem := bus.NewMemory()
	cb := &countingBus{Bus: mem, counts: map[string]int{}}
	ids := identity.NewIssuer([]byte("secret"))
	cfg := application.Config{Bus: cb, Edges: application.StaticEdge{ID: "e1"}, OperatorKey: operatorKey}
	for _, o := range opts {
		o(&cfg)
	}
	app, err := application.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	app.Routes(mux)
	keyStore, err := keys.OpenFile(filepath.Join(t.TempDir(), keys.FileName))
	if err != nil {
		t.Fatal(err)
	}
	app.StreamKeyRoutes(mux, keys.New(keyStore, "master", slog.New(slog.DiscardHandler)), &memPulls{m: map[string]application.PullView{}})
	c := &cluster{t: t, bus: cb, app: app, api: httptest.NewServer(mux), conn: map[string]*connection.Server{}, ws: map[string]*httptest.Server{}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = app.Run(ctx) }()
	for _, id := range []string{"c1", "c2"} {
		srv, err := connection.New(connection.Config{ID: id, Bus: cb, Identity: ids})
		if err != nil {
			t.Fatal(err)
		}
		m := http.NewServeMux()
		m.Handle("/ws", srv.Handler())
		c.conn[id], c.ws[id] = srv, httptest.NewServer(m)
		wg.Add(1)
		go func() { defer wg.Done(); _ = srv.Run(ctx) }()
	}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		for id, srv := range c.conn {
			if err := srv.Shutdown(sctx); err != nil {
				t.Errorf("shutdown %s: %v", id, err)
			}
			c.ws[id].Close()
		}
		cancel()
		wg.Wait()
		c.api.Close()
		mem.Close()
	})
	return c
}

type viewer struct {
	t      *testing.T
	c      *websocket.Conn
	frames chan []byte
	sid    string
	uid    string
	token  string
}

func (c *cluster) viewer(conn string, hdr http.Header, token ...string) *viewer {
	c.t.Helper()
	return c.viewerFrom(conn, "", hdr, token...)
}

// viewerFrom dials from a given loopback source address (127.x.y.z), so
// that GeoIP fixtures can place viewers in different countries.
func (c *cluster) viewerFrom(conn, localIP string, hdr http.Header, token ...string) *viewer {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	opts := &websocket.DialOptions{HTTPHeader: hdr}
	if localIP != "" {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(localIP)}}
		opts.HTTPClient = &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
	}
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(c.ws[conn].URL, "http")+"/ws", opts)
	if err != nil {
		c.t.Fatal(err)
	}
	v := &viewer{t: c.t, c: ws, frames: make(chan []byte, 256)}
	go func() {
		defer close(v.frames)
		for {
			_, data, err := ws.Read(context.Background())
			if err != nil {
				return
			}
			v.frames <- data
		}
	}()
	c.t.Cleanup(func() { ws.CloseNow() })
	tok := ""
	if len(token) > 0 {
		tok = `,"token":"` + token[0] + `"`
	}
	v.send(`{"t":"hello","lang":"pt-BR","screen":{"w":390,"h":844}` + tok + `}`)
	w := v.next()
	if w["t"] != "welcome" {
		c.t.Fatalf("welcome: %v", w)
	}
	v.sid, v.uid, v.token = w["sid"].(string), w["uid"].(string), w["token"].(string)
	return v
}

func (v *viewer) send(s string) {
	v.t.Helper()
	if err := v.c.Write(context.Background(), websocket.MessageText, []byte(s)); err != nil {
		v.t.Fatal(err)
	}
}

func (v *viewer) nextRaw() []byte {
	v.t.Helper()
	select {
	case f, ok := <-v.frames:
		if !ok {
			v.t.Fatal("link closed")
		}
		return f
	case <-time.After(5 * time.Second):
		v.t.Fatal("no frame within 5 s")
	}
	return nil
}

func (v *viewer) next() map[string]any {
	v.t.Helper()
	var m map[string]any
	f := v.nextRaw()
	if err := json.Unmarshal(f, &m); err != nil {
		v.t.Fatalf("%s: %v", f, err)
	}
	return m
}

func (v *viewer) quiet(d time.Duration) {
	v.t.Helper()
	select {
	case f, ok := <-v.frames:
		if ok {
			v.t.Fatalf("unexpected frame %s", f)
		}
	case <-time.After(d):
	}
}

func (v *viewer) watch(stream string) map[string]any {
	v.t.Helper()
	v.send(`{"t":"watch","stream":"` + stream + `"}`)
	ep := v.next()
	if ep["t"] != "endpoint" {
		v.t.Fatalf("endpoint: %v", ep)
	}
	return ep
}

func (c *cluster) apiGet(path string, key string) (int, map[string]any) {
	c.t.Helper()
	req, _ := http.NewRequest("GET", c.api.URL+path, nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(body, &out); err != nil {
		c.t.Fatalf("%s: %s: %v", path, body, err)
	}
	if resp.StatusCode >= 400 && resp.Header.Get("Content-Type") != "application/problem+json" {
		c.t.Fatalf("%s: error %d is not problem+json", path, resp.StatusCode)
	}
	return resp.StatusCode, out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestViewerJourney(t *testing.T) {
	c := newCluster(t)
	hdr := http.Header{}
	hdr.Set("User-Agent", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1")
	hdr.Set("Accept-Language", "pt-BR,pt;q=0.9")
	a := c.viewer("c1", hdr)

	// The application tier holds a profile with the raw facts and derives
	// attributes, which it mirrors back to the connection server.
	var p application.ProfileView
	waitFor(t, "profile", func() bool { var ok bool; p, ok = c.app.Profile(a.sid); return ok })
	if p.Conn != "c1" || p.UID != a.uid || p.Facts.IP != "127.0.0.1" || !strings.Contains(p.Facts.UserAgent, "iPhone") ||
		p.Facts.AcceptLanguage != "pt-BR,pt;q=0.9" || !bytes.Contains(p.Facts.Hello, []byte(`"screen"`)) {
		t.Fatalf("profile %+v", p)
	}
	if p.Attrs["device"] != "mobile" || p.Attrs["os"] != "ios" || p.Attrs["browser"] != "safari" || p.Attrs["lang"] != "pt" || p.Attrs["country"] != "unknown" || p.Attrs["conn"] != "c1" {
		t.Fatalf("derived attrs %v", p.Attrs)
	}
	waitFor(t, "attributes mirrored to c1", func() bool { return slices.Contains(c.conn["c1"].LinkGroups(a.sid), "device:mobile") })

	// watch → endpoint (with seq) and the current status; the link joins
	// stream:demo on both tiers.
	ep := a.watch("demo")
	if ep["stream"] != "demo" || ep["whep"] != "/whep/demo" || ep["edge"] != "e1" || ep["hls"] != "/hls/demo/index.m3u8" || ep["seq"] == nil {
		t.Fatalf("endpoint %v", ep)
	}
	if st := a.next(); st["t"] != "stream-status" || st["state"] != "offline" || st["seq"] == nil {
		t.Fatalf("status %v", st)
	}
	if !slices.Contains(c.conn["c1"].LinkGroups(a.sid), "stream:demo") || !slices.Contains(c.conn["c1"].LinkGroups(a.sid), "edge:e1") {
		t.Fatalf("connection tier groups %v", c.conn["c1"].LinkGroups(a.sid))
	}
	if p, _ := c.app.Profile(a.sid); !slices.Contains(p.Groups, "stream:demo") {
		t.Fatalf("application tier groups %v", p.Groups)
	}

	// More viewers on both connection servers; one watches something else.
	b := c.viewer("c2", nil)
	b.watch("demo")
	b.next()
	other := c.viewer("c2", nil)
	other.watch("other")
	other.next()
	idle := c.viewer("c1", nil)
	waitFor(t, "idle viewer's attributes mirrored", func() bool { return slices.Contains(c.conn["c1"].LinkGroups(idle.sid), "country:unknown") })
	_, g := c.apiGet("/api/v1/groups/stream:demo", operatorKey)
	if g["members"] != float64(2) {
		t.Fatalf("stream:demo members %v", g["members"])
	}

	before1, before2 := c.bus.count(bus.Downward("c1")), c.bus.count(bus.Downward("c2"))
	c.app.StreamEvent(media.Event{Stream: "demo", Live: true, Info: media.StreamInfo{Name: "demo", Protocol: "whip", StartedAt: time.Now()}})
	ra, rb := a.nextRaw(), b.nextRaw()
	if !bytes.Equal(ra, rb) {
		t.Fatalf("members got different bytes:\n%s\n%s", ra, rb)
	}
	var st map[string]any
	_ = json.Unmarshal(ra, &st)
	if st["t"] != "stream-status" || st["state"] != "live" || st["g"] != "stream:demo" || st["off"] != float64(1) || st["ep"] == "" || st["seq"] != nil {
		t.Fatalf("group status %s", ra)
	}
	// One request per connection server.
	if d1, d2 := c.bus.count(bus.Downward("c1"))-before1, c.bus.count(bus.Downward("c2"))-before2; d1 != 1 || d2 != 1 {
		t.Fatalf("publishes per connection server: c1 %d, c2 %d", d1, d2)
	}
	other.quiet(150 * time.Millisecond)
	idle.quiet(0)

	c.app.StreamEvent(media.Event{Stream: "demo", Live: false})
	ra, rb = a.nextRaw(), b.nextRaw()
	_ = json.Unmarshal(ra, &st)
	if !bytes.Equal(ra, rb) || st["state"] != "offline" || st["off"] != float64(2) {
		t.Fatalf("offline status %s / %s", ra, rb)
	}
	other.quiet(100 * time.Millisecond)

	// A late viewer of a live stream gets state live with its endpoint.
	c.app.StreamEvent(media.Event{Stream: "demo", Live: true, Info: media.StreamInfo{Name: "demo", Protocol: "rtsp"}})
	a.nextRaw()
	b.nextRaw()
	late := c.viewer("c2", nil)
	late.watch("demo")
	if st := late.next(); st["state"] != "live" {
		t.Fatalf("late viewer status %v", st)
	}
	code, streams := c.apiGet("/api/v1/streams", operatorKey)
	list := streams["streams"].([]any)
	if code != 200 || len(list) != 1 || list[0].(map[string]any)["name"] != "demo" || list[0].(map[string]any)["viewers"] != float64(3) {
		t.Fatalf("streams %d %v", code, streams)
	}

	// Closing a link removes it from both tiers.
	a.c.Close(websocket.StatusNormalClosure, "")
	waitFor(t, "profile removed", func() bool { _, ok := c.app.Profile(a.sid); return !ok })
	if _, g := c.apiGet("/api/v1/groups/stream:demo", operatorKey); g["members"] != float64(2) {
		t.Fatalf("members after a close: %v", g["members"])
	}
}

func TestWatchErrorsAndVote(t *testing.T) {
	c := newCluster(t)
	// A viewer JWT limited to one stream may watch only that one.
	tok, _ := identity.NewIssuer([]byte("secret")).MintViewer("fan-1", []string{"cup-final"}, time.Hour)
	r := c.viewer("c1", nil, tok)
	r.send(`{"t":"watch","stream":"demo"}`)
	if e := r.next(); e["t"] != "error" || e["code"] != "forbidden_stream" {
		t.Fatalf("restricted viewer: %v", e)
	}
	if ep := r.watch("cup-final"); ep["stream"] != "cup-final" {
		t.Fatalf("allowed stream: %v", ep)
	}
	v := c.viewer("c1", nil)
	v.send(`{"t":"watch","stream":"../etc/passwd"}`)
	if e := v.next(); e["t"] != "error" || e["code"] != "bad_stream" || e["seq"] == nil {
		t.Fatalf("bad stream: %v", e)
	}
	v.send(`{"t":"vote","poll":"p1","choice":0,"id":"v1"}`)
	if e := v.next(); e["t"] != "error" || e["code"] != "unknown_poll" || e["id"] != "v1" {
		t.Fatalf("vote: %v", e)
	}
	// The link is still usable.
	if ep := v.watch("fine_name-1.0"); ep["whep"] != "/whep/fine_name-1.0" {
		t.Fatalf("endpoint %v", ep)
	}
}

func TestTelemetryAggregatedAndVisible(t *testing.T) {
	c := newCluster(t)
	v := c.viewer("c1", nil)
	v.watch("demo")
	v.next()
	w := c.viewer("c2", nil) // not watching: counts toward global only
	reports := []string{
		`{"t":"telemetry","sn":1,"iv":5000,"sta":"p","msd":800,"bl":1500,"pb":2500,"mtp":8000,"ltc":900,"play_ms":4000,"rb_n":1,"rb_ms":1000,"dfa":2,"rtc":{"frz_n":1,"frz_ms":500,"loss":0.02,"jbd_ms":40,"rtt_ms":30}}`,
		`{"t":"telemetry","sn":2,"iv":5000,"sta":"p","bl":1700,"pb":2500,"play_ms":5000,"rb_n":0,"rb_ms":0,"dfa":0,"rtc":{"frz_n":0,"frz_ms":0,"loss":0.0,"jbd_ms":60,"rtt_ms":50}}`,
		`{"t":"telemetry","sn":5,"iv":5000,"sta":"p","pb":2500,"play_ms":5000,"rb_n":0,"rb_ms":0,"dfa":0}`,
		`{"t":"telemetry","sn":5,"iv":5000,"sta":"p","play_ms":5000,"rb_n":0,"rb_ms":0,"dfa":0}`,
	}
	for _, r := range reports {
		v.send(r)
	}
	w.send(`{"t":"telemetry","sn":1,"iv":5000,"sta":"r","msd":3000,"play_ms":0,"rb_n":1,"rb_ms":5000,"dfa":0}`)
	var g map[string]any
	waitFor(t, "telemetry in the API", func() bool {
		_, g = c.apiGet("/api/v1/groups/stream:demo", operatorKey)
		q, _ := g["qoe"].(map[string]any)
		total, _ := q["total"].(map[string]any)
		return total != nil && total["reports"] == float64(3)
	})
	q := g["qoe"].(map[string]any)
	total := q["total"].(map[string]any)
	want := map[string]float64{
		"reports": 3, "lost_reports": 2, "play_ms": 14000, "rebuffer_ms": 1000, "rebuffer_count": 1,
		"rebuffer_ratio": 1000.0 / 15000, "freeze_count": 1, "freeze_ms": 500, "freeze_ratio": 500.0 / 15000,
		"loss": 0.01, "jitter_buffer_ms": 50, "rtt_ms": 40, "bitrate_kbps": 2500, "dropped_frames": 2,
	}
	for k, v := range want {
		got, _ := total[k].(float64)
		if diff := got - v; diff > 1e-9 || diff < -1e-9 {
			t.Errorf("%s = %v, want %v", k, total[k], v)
		}
	}
	if s := total["startup_ms"].(map[string]any); s["p50"] != float64(800) || s["n"] != float64(1) {
		t.Errorf("startup %v", s)
	}
	if q["current"] == nil || len(q["windows"].([]any)) == 0 || q["window_ms"] != float64(10000) {
		t.Errorf("windows %v", q)
	}
	// The other viewer's report comes through the other connection server,
	// so it may land after the first viewer's.
	var gt map[string]any
	waitFor(t, "both viewers' telemetry in global", func() bool {
		_, gl := c.apiGet("/api/v1/groups/global", operatorKey)
		q, _ := gl["qoe"].(map[string]any)
		gt, _ = q["total"].(map[string]any)
		return gt != nil && gt["reports"] == float64(4)
	})
	if gt["reports"] != float64(4) || gt["startup_ms"].(map[string]any)["p95"] != float64(3000) {
		t.Fatalf("global total %v", gt)
	}
}

func TestAPIErrors(t *testing.T) {
	c := newCluster(t)
	for _, tc := range []struct {
		path, key string
		status    int
	}{
		{"/api/v1/groups", "", 401},
		{"/api/v1/groups", "wrong", 401},
		{"/api/v1/streams", "", 401},
		{"/api/v1/groups/colour:red", operatorKey, 404},
		{"/api/v1/groups/nope", operatorKey, 404},
		{"/api/v1/nothing", operatorKey, 404},
		{"/api/v1/groups/stream:none", operatorKey, 200},
		{"/api/v1/groups/global", operatorKey, 200},
		{"/api/v1/streams", operatorKey, 200},
	} {
		if got, body := c.apiGet(tc.path, tc.key); got != tc.status {
			t.Errorf("%s with key %q: %d %v, want %d", tc.path, tc.key, got, body, tc.status)
		}
	}
	for method, want := range map[string]int{"PUT": 405, "POST": 400} {
		req, _ := http.NewRequest(method, c.api.URL+"/api/v1/groups", nil)
		req.Header.Set("Authorization", "Bearer "+operatorKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("%s: %d, want %d", method, resp.StatusCode, want)
		}
	}
	v := c.viewer("c1", nil)
	waitFor(t, "profile", func() bool { _, ok := c.app.Profile(v.sid); return ok })
	_, list := c.apiGet("/api/v1/groups", operatorKey)
	ids := []string{}
	for _, g := range list["groups"].([]any) {
		ids = append(ids, g.(map[string]any)["id"].(string))
	}
	for _, want := range []string{"global", "conn:c1", "country:unknown"} {
		if !slices.Contains(ids, want) {
			t.Fatalf("groups %v lack %s", ids, want)
		}
	}
	_, g := c.apiGet("/api/v1/groups/conn:c1", operatorKey)
	if g["members"] != float64(1) || g["text"] != "conn=c1" || fmt.Sprint(g["definition"]) != "map[eq:[conn c1]]" {
		t.Fatalf("group view %v", g)
	}
}

// memPulls is an in-memory pull table behind the pull routes; the RTSP
// puller that really dials cameras has its own tests in ingest/rtsp.
type memPulls struct {
	mu sync.Mutex
	m  map[string]application.PullView
}

func (p *memPulls) AddPull(s application.PullSpec) (application.PullView, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !strings.HasPrefix(s.URL, "rtsp://") {
		return application.PullView{}, errors.New("url: want an rtsp:// URL")
	}
	if _, ok := p.m[s.Stream]; ok {
		return application.PullView{}, application.ErrPullExists
	}
	v := application.PullView{PullSpec: s, State: "idle", Since: time.Now()}
	p.m[s.Stream] = v
	return v, nil
}

func (p *memPulls) RemovePull(stream string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.m[stream]; !ok {
		return application.ErrNoSuchPull
	}
	delete(p.m, stream)
	return nil
}

func (p *memPulls) Pull(stream string) (application.PullView, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v, ok := p.m[stream]
	return v, ok
}

func (p *memPulls) ListPulls() []application.PullView {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]application.PullView, 0, len(p.m))
	for _, v := range p.m {
		out = append(out, v)
	}
	return out
}

// A client that reconnects elsewhere and cannot be replayed (the new
// connection server never held its group's messages) gets the state of the
// stream it was watching again, without sending watch.
func TestUnrecoveredResumeResendsState(t *testing.T) {
	c := newCluster(t)
	first := c.viewer("c1", nil)
	first.watch("cup")
	first.c.CloseNow()

	again := c.viewer("c2", nil, first.token)
	again.send(`{"t":"resume","sid":"` + first.sid + `","offsets":{"stream:cup":41},"epochs":{"stream:cup":"old-epoch"}}`)
	w := again.next()
	if w["t"] != "welcome" || w["recovered"] != false {
		t.Fatalf("answer to resume: %v", w)
	}
	ep := again.next()
	if ep["t"] != "endpoint" || ep["stream"] != "cup" {
		t.Fatalf("after an unrecovered resume: %v, want the endpoint again", ep)
	}
	if st := again.next(); st["t"] != "stream-status" || st["stream"] != "cup" {
		t.Fatalf("after the endpoint: %v, want the stream's status", st)
	}
}
