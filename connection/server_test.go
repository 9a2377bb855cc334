package connection

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/backchannel/backchannel/groups"
	"github.com/backchannel/backchannel/internal/bus"
	"github.com/backchannel/backchannel/internal/control"
	"github.com/backchannel/backchannel/internal/identity"
)

// transportUnderTest is the transport newHarness gives its servers;
// TestCoderTransport runs the suite again with the coder one.
var transportUnderTest = TransportEpoll

// plainSyscallsUnderTest turns the epoll transport's io_uring batching off.
var plainSyscallsUnderTest bool

// harness is one connection server on a real socket, a memory bus, and a
// recorder of everything it relays upward (standing in for the application
// tier, which the application package's tests put in this place).
type harness struct {
	t      *testing.T
	srv    *Server
	http   *httptest.Server
	bus    *bus.Memory
	ids    *identity.Issuer
	reg    *prometheus.Registry
	mu     sync.Mutex
	up     []groups.Mirror
	upSeen chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
}

func newHarness(t *testing.T, tune func(*Config)) *harness {
	t.Helper()
	h := &harness{t: t, bus: bus.NewMemory(), ids: identity.NewIssuer([]byte("test-secret")), reg: prometheus.NewRegistry(), upSeen: make(chan struct{}, 1)}
	cfg := Config{ID: "c1", Bus: h.bus, Identity: h.ids, Metrics: h.reg, HelloTimeout: 2 * time.Second, DrainWindow: 50 * time.Millisecond, Transport: transportUnderTest, PlainSyscalls: plainSyscallsUnderTest}
	if tune != nil {
		tune(&cfg)
	}
	if rb, ok := cfg.Bus.(*resetBus); ok {
		h.bus = rb.Memory
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.srv = srv
	mux := http.NewServeMux()
	mux.Handle("/ws", srv.Handler())
	mux.Handle("/connect", srv.ConnectHandler())
	h.http = httptest.NewServer(mux)
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.done = make(chan struct{})
	runDone := make(chan error, 1)
	go func() { runDone <- srv.Run(ctx) }()
	go func() {
		defer close(h.done)
		_ = h.bus.Subscribe(ctx, bus.Upward, bus.ApplicationGroup, func(_ context.Context, batch []bus.Message) error {
			h.mu.Lock()
			for _, m := range batch {
				mm, err := groups.DecodeMirror(m.Data)
				if err != nil {
					t.Errorf("bad upward message %s: %v", m.Data, err)
				}
				h.up = append(h.up, mm)
			}
			h.mu.Unlock()
			select {
			case h.upSeen <- struct{}{}:
			default:
			}
			return nil
		})
	}()
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		if err := srv.Shutdown(sctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-runDone; err != nil {
			t.Errorf("Run: %v", err)
		}
		cancel()
		<-h.done
		h.http.Close()
		h.bus.Close()
	})
	return h
}

// waitUp waits for an upward message satisfying ok.
func (h *harness) waitUp(ok func(groups.Mirror) bool) groups.Mirror {
	h.t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		h.mu.Lock()
		for _, m := range h.up {
			if ok(m) {
				h.mu.Unlock()
				return m
			}
		}
		h.mu.Unlock()
		select {
		case <-h.upSeen:
		case <-deadline:
			h.t.Fatal("expected upward message never came")
		}
	}
}

func (h *harness) down(msgs ...groups.Mirror) {
	h.t.Helper()
	data := make([][]byte, len(msgs))
	for i, m := range msgs {
		data[i] = m.Encode()
	}
	if err := h.bus.Publish(context.Background(), bus.Downward("c1"), data...); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) closes(reason string) float64 {
	mfs, _ := h.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "backchannel_connection_closes_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "reason" && lp.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// client is a real WebSocket client whose frames are read in the background
// (which also answers pings).
type client struct {
	t      *testing.T
	c      *websocket.Conn
	frames chan []byte
	err    chan error
}

func (h *harness) dial(header http.Header) *client {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(h.http.URL, "http")+"/ws", &websocket.DialOptions{HTTPHeader: header})
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		h.t.Fatalf("dial: %v (status %d)", err, status)
	}
	c.SetReadLimit(4 << 20)
	cl := &client{t: h.t, c: c, frames: make(chan []byte, 1024), err: make(chan error, 1)}
	go func() {
		for {
			_, data, err := c.Read(context.Background())
			if err != nil {
				cl.err <- err
				close(cl.frames)
				return
			}
			cl.frames <- data
		}
	}()
	h.t.Cleanup(func() { _ = c.CloseNow() })
	return cl
}

func (c *client) send(s string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.c.Write(ctx, websocket.MessageText, []byte(s)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// next returns the next frame, or fails after a timeout.
func (c *client) next() []byte {
	c.t.Helper()
	select {
	case f, ok := <-c.frames:
		if !ok {
			c.t.Fatalf("link closed: %v", <-c.err)
		}
		return f
	case <-time.After(5 * time.Second):
		c.t.Fatal("no frame within 5 s")
	}
	return nil
}

func (c *client) nextJSON() map[string]any {
	c.t.Helper()
	var m map[string]any
	f := c.next()
	if err := json.Unmarshal(f, &m); err != nil {
		c.t.Fatalf("frame %s: %v", f, err)
	}
	return m
}

// closed waits for the link to end and returns the close code and reason.
func (c *client) closed() (websocket.StatusCode, string) {
	c.t.Helper()
	deadline := time.After(8 * time.Second)
	for {
		select {
		case _, ok := <-c.frames:
			if ok {
				continue
			}
			err := <-c.err
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				return ce.Code, ce.Reason
			}
			return -1, err.Error()
		case <-deadline:
			c.t.Fatal("link not closed within 8 s")
		}
	}
}

// quiet asserts no frame arrives for a while.
func (c *client) quiet(d time.Duration) {
	c.t.Helper()
	select {
	case f, ok := <-c.frames:
		if ok {
			c.t.Fatalf("unexpected frame %s", f)
		}
	case <-time.After(d):
	}
}

func (c *client) hello(extra string) map[string]any {
	c.t.Helper()
	c.send(`{"t":"hello","ua":"test-agent","lang":"pt-BR","screen":{"w":390,"h":844,"dpr":3}` + extra + `}`)
	w := c.nextJSON()
	if w["t"] != "welcome" || w["sid"] == "" || w["uid"] == "" || w["token"] == "" {
		c.t.Fatalf("welcome %v", w)
	}
	return w
}

func TestHelloWelcomeAndIdentity(t *testing.T) {
	h := newHarness(t, nil)
	hdr := http.Header{}
	hdr.Set("User-Agent", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)")
	hdr.Set("Accept-Language", "pt-BR,pt;q=0.9")
	hdr.Set("Sec-CH-UA-Mobile", "?1")
	hdr.Set("Sec-CH-UA-Platform", `"iOS"`)
	c := h.dial(hdr)
	w := c.hello("")
	if w["seq"] != float64(1) {
		t.Fatalf("welcome should carry seq 1: %v", w)
	}
	sid, uid, token := w["sid"].(string), w["uid"].(string), w["token"].(string)
	if !strings.HasPrefix(uid, "anon-") {
		t.Fatalf("uid %q is not anonymous", uid)
	}
	open := h.waitUp(func(m groups.Mirror) bool { return m.Op == groups.OpLinkOpened && m.Link == sid })
	f := open.Facts
	if open.Conn != "c1" || open.UID != uid || f.IP != "127.0.0.1" || !strings.Contains(f.UserAgent, "iPhone") ||
		f.AcceptLanguage != "pt-BR,pt;q=0.9" || f.ClientHints["sec-ch-ua-mobile"] != "?1" || f.ClientHints["sec-ch-ua-platform"] != `"iOS"` ||
		!bytes.Contains(f.Hello, []byte(`"lang":"pt-BR"`)) || open.Attrs["conn"] != "c1" {
		t.Fatalf("link opened %+v facts %+v", open, f)
	}
	if h.srv.Links() != 1 || h.srv.GroupCount("conn:c1") != 1 || h.srv.GroupCount("global") != 1 {
		t.Fatalf("links %d", h.srv.Links())
	}

	// Reconnecting with the token is the same user on a new session.
	c2 := h.dial(nil)
	w2 := c2.hello(`,"token":"` + token + `"`)
	if w2["uid"] != uid || w2["sid"] == sid {
		t.Fatalf("reconnect: %v, want uid %s and a new sid", w2, uid)
	}
	// A viewer JWT names the user.
	jwt, _ := h.ids.MintViewer("viewer-7", nil, time.Hour)
	if w3 := h.dial(nil).hello(`,"token":"` + jwt + `"`); w3["uid"] != "viewer-7" || w3["token"] != jwt {
		t.Fatalf("viewer JWT: %v", w3)
	}
	// A bad token is not an error: a fresh anonymous identity.
	w4 := h.dial(nil).hello(`,"token":"not.a.jwt"`)
	if w4["uid"] == uid || !strings.HasPrefix(w4["uid"].(string), "anon-") {
		t.Fatalf("bad token: %v", w4)
	}
	if n := h.srv.Links(); n != 4 {
		t.Fatalf("Links() = %d, want 4", n)
	}
	_ = c.c.Close(websocket.StatusNormalClosure, "bye")
	h.waitUp(func(m groups.Mirror) bool { return m.Op == groups.OpLinkClosed && m.Link == sid && m.Code == 1000 })
	if n := h.srv.Links(); n != 3 {
		t.Fatalf("Links() after a close = %d, want 3", n)
	}
}

func TestConnectEndpoint(t *testing.T) {
	h := newHarness(t, nil)
	get := func(url string, hdr http.Header) map[string]string {
		req, _ := http.NewRequest("GET", url, nil)
		for k, v := range hdr {
			req.Header[k] = v
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]string
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
			t.Fatalf("connect: %d %v", resp.StatusCode, err)
		}
		return out
	}
	host := strings.TrimPrefix(h.http.URL, "http://")
	if got := get(h.http.URL+"/connect", nil)["url"]; got != "ws://"+host+"/ws" {
		t.Fatalf("url %q", got)
	}
	if got := get(h.http.URL+"/connect", http.Header{"X-Forwarded-Proto": {"https"}})["url"]; got != "wss://"+host+"/ws" {
		t.Fatalf("behind TLS proxy: %q", got)
	}
	srv, err := New(Config{ID: "c2", Bus: h.bus, Identity: h.ids, PublicURL: "https://live.example.com/bc/"})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	srv.ConnectHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/connect", nil))
	if !strings.Contains(rec.Body.String(), `"url":"wss://live.example.com/bc/ws"`) {
		t.Fatalf("public url: %s", rec.Body)
	}
	rec = httptest.NewRecorder()
	srv.ConnectHandler().ServeHTTP(rec, httptest.NewRequest("POST", "/connect", nil))
	if rec.Code != 405 || rec.Header().Get("Content-Type") != "application/problem+json" {
		t.Fatalf("POST /connect: %d %s", rec.Code, rec.Header().Get("Content-Type"))
	}
	if _, err := New(Config{ID: "c3", Bus: h.bus, Identity: h.ids, PublicURL: "not a url"}); err == nil {
		t.Fatal("bad PublicURL accepted")
	}
	if _, err := New(Config{Bus: h.bus, Identity: h.ids}); err == nil {
		t.Fatal("empty ID accepted")
	}
	if _, err := New(Config{ID: "c4", Bus: h.bus, Identity: h.ids, ReplyDelay: time.Minute}); err == nil {
		t.Fatal("a reply delay of a minute accepted")
	}
	if s, err := New(Config{ID: "c5", Bus: h.bus, Identity: h.ids}); err != nil || s.cfg.ReplyDelay != DefaultReplyDelay {
		t.Fatalf("default reply delay: %v", err)
	}
}

func TestOriginCheck(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.AllowedOrigins = []string{"*.example.com"} })
	wsURL := "ws" + strings.TrimPrefix(h.http.URL, "http") + "/ws"
	try := func(origin string) int {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, resp, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {origin}}})
		if err == nil {
			c.CloseNow()
			return 101
		}
		if resp == nil {
			t.Fatalf("dial %s: %v", origin, err)
		}
		return resp.StatusCode
	}
	if got := try("https://evil.test"); got != 403 {
		t.Fatalf("evil origin: %d", got)
	}
	if got := try("https://player.example.com"); got != 101 {
		t.Fatalf("allowed origin: %d", got)
	}
	if got := try("http://" + strings.TrimPrefix(h.http.URL, "http://")); got != 101 {
		t.Fatalf("same host: %d", got)
	}
	// Default: same host only.
	h2 := newHarness(t, nil)
	wsURL = "ws" + strings.TrimPrefix(h2.http.URL, "http") + "/ws"
	if got := try("https://player.example.com"); got != 403 {
		t.Fatalf("default allow-list let a foreign origin in: %d", got)
	}
}

// TestViolationsCloseOnlyThatLink checks each kind of misbehaviour closes
// the offending link with its documented code while a well-behaved link on
// the same server keeps receiving group messages.
func TestViolationsCloseOnlyThatLink(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.HelloTimeout = 300 * time.Millisecond })
	good := h.dial(nil)
	gw := good.hello("")
	h.down(groups.SetAttrs(gw["sid"].(string), groups.Attrs{"stream": "demo"}))
	waitFor(t, func() bool { return h.srv.GroupCount("stream:demo") == 1 })

	cases := []struct {
		name   string
		act    func(c *client)
		code   websocket.StatusCode
		reason string
	}{
		{"malformed JSON", func(c *client) { c.hello(""); c.send(`{"t":"watch",`) }, control.CloseInvalidPayload, "malformed"},
		{"bad field type", func(c *client) { c.hello(""); c.send(`{"t":"watch","stream":42}`) }, control.CloseInvalidPayload, "malformed"},
		{"unknown type", func(c *client) { c.hello(""); c.send(`{"t":"dance"}`) }, control.CloseUnknownType, "unknown_type"},
		{"oversized frame", func(c *client) {
			c.hello("")
			c.send(`{"t":"watch","stream":"` + strings.Repeat("x", control.MaxFrame+1) + `"}`)
		}, control.CloseTooBig, "too_big"},
		{"binary frame", func(c *client) {
			c.hello("")
			_ = c.c.Write(context.Background(), websocket.MessageBinary, []byte{1, 2, 3})
		}, control.CloseUnsupportedData, "binary"},
		{"flood", func(c *client) {
			c.hello("")
			for i := 0; i < 100; i++ {
				if c.c.Write(context.Background(), websocket.MessageText, []byte(`{"t":"watch","stream":"demo"}`)) != nil {
					return
				}
			}
		}, control.CloseRateLimited, "rate_limited"},
		{"no hello", func(c *client) {}, control.CloseHelloTimeout, "hello_timeout"},
		{"watch before hello", func(c *client) { c.send(`{"t":"watch","stream":"demo"}`) }, control.CloseProtocolError, "protocol"},
		{"hello twice", func(c *client) { c.hello(""); c.send(`{"t":"hello"}`) }, control.CloseProtocolError, "protocol"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := h.closes(tc.reason)
			bad := h.dial(nil)
			bad.t = t
			tc.act(bad)
			code, _ := bad.closed()
			if code != tc.code {
				t.Fatalf("close code %d, want %d", code, tc.code)
			}
			waitFor(t, func() bool { return h.closes(tc.reason) == before+1 })
			msg := control.EncodeGroup(control.Notice{Text: fmt.Sprint("still here ", i)}, "stream:demo", uint64(i+1), "ep")
			h.down(groups.SendGroup("stream:demo", msg, false))
			good.t = t
			if got := good.next(); !bytes.Equal(got, msg) {
				t.Fatalf("good link got %s, want %s", got, msg)
			}
		})
	}
	waitFor(t, func() bool { return h.srv.Links() == 1 })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestDownwardMessages(t *testing.T) {
	h := newHarness(t, nil)
	var cs []*client
	var sids []string
	for i := 0; i < 4; i++ {
		c := h.dial(nil)
		cs = append(cs, c)
		sids = append(sids, c.hello("")["sid"].(string))
	}
	h.down(
		groups.SetAttrs(sids[0], groups.Attrs{"stream": "demo", "country": "BR"}),
		groups.SetAttrs(sids[1], groups.Attrs{"stream": "demo", "conn": "forged"}),
		groups.SetAttrs(sids[2], groups.Attrs{"stream": "other"}),
		groups.DefineGroup(groups.Group{ID: "br", Pred: groups.Eq("country", "BR")}),
	)
	waitFor(t, func() bool { return h.srv.GroupCount("stream:demo") == 2 && h.srv.GroupCount("br") == 1 })
	if g := h.srv.LinkGroups(sids[1]); !slices.Contains(g, "conn:c1") || slices.Contains(g, "conn:forged") {
		t.Fatalf("the conn attribute is the server's own: %v", g)
	}
	msg := control.EncodeGroup(control.StreamStatus{Stream: "demo", State: control.StateLive}, "stream:demo", 1, "e1")
	h.down(groups.SendGroup("stream:demo", msg, true))
	for _, i := range []int{0, 1} {
		if got := cs[i].next(); !bytes.Equal(got, msg) {
			t.Fatalf("member %d got %s", i, got)
		}
	}
	cs[2].quiet(100 * time.Millisecond)
	cs[3].quiet(0)

	h.down(groups.SendLink(sids[3], control.Encode(control.Notice{Text: "just you"}), false))
	if got := cs[3].nextJSON(); got["text"] != "just you" || got["seq"] != float64(2) {
		t.Fatalf("per-link message %v (want seq 2 after welcome's 1)", got)
	}
	h.down(groups.SendGroup("br", control.EncodeGroup(control.Notice{Text: "olá"}, "br", 1, "e1"), false))
	if got := cs[0].nextJSON(); got["g"] != "br" || got["text"] != "olá" {
		t.Fatalf("custom group message %v", got)
	}
	h.down(groups.CloseLink(sids[2], 4321, "moved"))
	if code, reason := cs[2].closed(); code != 4321 || reason != "moved" {
		t.Fatalf("CloseLink gave %d %q", code, reason)
	}
	h.down(groups.UndefineGroup("br"), groups.SetAttrs(sids[0], groups.Attrs{"stream": ""}))
	waitFor(t, func() bool { return h.srv.GroupCount("br") == 0 && h.srv.GroupCount("stream:demo") == 1 })
	// A broadcast-topic message reaches this server too.
	if err := h.bus.Publish(context.Background(), bus.Broadcast, groups.SendGroup("global", control.EncodeGroup(control.Notice{Text: "all"}, "global", 1, "e1"), false).Encode()); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 1, 3} {
		if got := cs[i].nextJSON(); got["text"] != "all" {
			t.Fatalf("broadcast to %d: %v", i, got)
		}
	}
}

func TestClientMessagesGoUpInBatches(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.FlushDelay = 30 * time.Millisecond })
	c := h.dial(nil)
	sid := c.hello("")["sid"].(string)
	start := time.Now()
	for i := 1; i <= 20; i++ {
		c.send(fmt.Sprintf(`{"t":"telemetry","sn":%d,"iv":5000,"play_ms":5000,"rb_n":0,"rb_ms":0,"dfa":0}`, i))
	}
	c.send(`{"t":"watch","stream":"demo"}`)
	c.send(`{"t":"vote","poll":"p1","choice":1,"id":"v1"}`)
	// Votes go up typed, in a binary batch, behind what came before them.
	vote := h.waitUp(func(m groups.Mirror) bool { return m.Op == groups.OpVotes })
	if len(vote.Votes) != 1 || vote.Conn != "c1" || vote.Batch == 0 || vote.Votes[0] != (groups.ClientVote{Link: sid, Poll: "p1", Choice: 1, ID: "v1"}) {
		t.Fatalf("relayed vote %+v", vote)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("relay took %v", d)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var sns []float64
	for _, m := range h.up {
		if m.Op == groups.OpClientMessage && m.Type == "telemetry" {
			if m.Link != sid || m.Conn != "c1" || m.UID == "" {
				t.Fatalf("relayed message %+v", m)
			}
			var tl map[string]any
			_ = json.Unmarshal(m.Payload, &tl)
			sns = append(sns, tl["sn"].(float64))
		}
	}
	if len(sns) != 20 || !slices.IsSorted(sns) {
		t.Fatalf("telemetry relayed out of order or incompletely: %v", sns)
	}
}

func TestSlowConsumerClosed(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.QueueSoft, c.QueueHard, c.WriteTimeout = 2, 4, 500*time.Millisecond
	})
	// A raw client that says hello and then never reads.
	ctx := context.Background()
	stalled, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(h.http.URL, "http")+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.CloseNow()
	_ = stalled.Write(ctx, websocket.MessageText, []byte(`{"t":"hello"}`))
	waitFor(t, func() bool { return h.srv.Links() == 1 })
	good := h.dial(nil)
	good.hello("")
	big := control.EncodeGroup(control.Notice{Text: strings.Repeat("x", 512<<10)}, "global", 1, "e")
	for i := 0; i < 40 && h.closes("slow_consumer")+h.closes("write_failed") == 0; i++ {
		h.down(groups.SendGroup("global", big, i%2 == 0))
		for good.next() == nil {
		}
	}
	waitFor(t, func() bool { return h.closes("slow_consumer")+h.closes("write_failed") >= 1 && h.srv.Links() == 1 })
}

func TestKeepaliveClosesDeadLinks(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.PingInterval = 100 * time.Millisecond })
	ctx := context.Background()
	// This client never reads, so it never answers pings.
	deaf, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(h.http.URL, "http")+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer deaf.CloseNow()
	_ = deaf.Write(ctx, websocket.MessageText, []byte(`{"t":"hello"}`))
	alive := h.dial(nil)
	alive.hello("")
	waitFor(t, func() bool { return h.closes("ping_timeout") == 1 && h.srv.Links() == 1 })
	time.Sleep(300 * time.Millisecond)
	if h.srv.Links() != 1 || h.closes("ping_timeout") != 1 {
		t.Fatalf("links %d, ping timeouts %v: the answering link must stay", h.srv.Links(), h.closes("ping_timeout"))
	}
}

func TestShutdownClosesEveryLink(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.DrainWindow = 200 * time.Millisecond })
	var cs []*client
	for i := 0; i < 3; i++ {
		c := h.dial(nil)
		c.hello("")
		cs = append(cs, c)
	}
	pending := h.dial(nil) // never says hello
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range append(cs, pending) {
		if code, _ := c.closed(); code != closeServiceRestart {
			t.Fatalf("close code %d, want 1012", code)
		}
	}
	if h.srv.Links() != 0 {
		t.Fatalf("%d links after Shutdown", h.srv.Links())
	}
	n := 0
	h.waitUp(func(m groups.Mirror) bool {
		if m.Op == groups.OpLinkClosed && m.Code == closeServiceRestart {
			n++
		}
		return n == 3
	})
	// New links are refused.
	resp, err := http.Get(h.http.URL + "/ws")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("upgrade during shutdown: %d", resp.StatusCode)
	}
}

// TestNoGoroutinesLeft runs a busy server through its life and checks that
// Shutdown (plus closing the listener and bus) leaves no goroutine behind.
func TestNoGoroutinesLeft(t *testing.T) {
	base := runtime.NumGoroutine()
	t.Run("life", func(t *testing.T) {
		h := newHarness(t, func(c *Config) { c.PingInterval = 50 * time.Millisecond })
		var cs []*client
		for i := 0; i < 5; i++ {
			c := h.dial(nil)
			sid := c.hello("")["sid"].(string)
			h.down(groups.SetAttrs(sid, groups.Attrs{"stream": "demo"}))
			cs = append(cs, c)
		}
		waitFor(t, func() bool { return h.srv.GroupCount("stream:demo") == 5 })
		h.down(groups.SendGroup("stream:demo", control.EncodeGroup(control.Notice{Text: "x"}, "stream:demo", 1, "e"), false))
		for _, c := range cs {
			c.next()
			c.send(`{"t":"watch","stream":"demo"}`)
		}
		time.Sleep(150 * time.Millisecond) // some keepalive rounds
	})
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base+2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > base+2 {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines before, %d after:\n%s", base, n, buf[:runtime.Stack(buf, true)])
	}
}

// A poller round that leaves many votes relays them when it ends, without
// waiting for the flush timer.
func TestBusyRoundRelaysItsVotesAtOnce(t *testing.T) {
	if transportUnderTest != TransportEpoll {
		t.Skip("round ends are the epoll transport's")
	}
	h := newHarness(t, func(c *Config) {
		c.FlushDelay = time.Minute // the timer would be too late
		c.RateLimit, c.RateBurst = 1e6, 1e6
	})
	const links = 8
	var cs []*client
	for range links {
		c := h.dial(nil)
		c.hello("")
		cs = append(cs, c)
	}
	for j := range roundFlushVotes/links + 16 {
		for i, c := range cs {
			c.send(fmt.Sprintf(`{"t":"vote","poll":"p1","choice":1,"id":"v%d.%d"}`, i, j))
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		h.mu.Lock()
		n := 0
		for _, m := range h.up {
			if m.Op == groups.OpVotes {
				n += len(m.Votes)
			}
		}
		h.mu.Unlock()
		if n >= roundFlushVotes {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d votes relayed in 5 s, want at least %d long before the flush timer", n, roundFlushVotes)
		}
		select {
		case <-h.upSeen:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// A full vote batch schedules one immediate flush, however many votes
// arrive before that flush runs.
func TestFullBatchSchedulesOneFlush(t *testing.T) {
	h := newHarness(t, nil)
	u := h.srv.up
	u.flushMu.Lock() // the flush cannot run yet
	var first *time.Timer
	for i := range maxUpVotes + 100 {
		u.addVote(nil, "l1", []byte("p1"), 1, fmt.Appendf(nil, "v%d", i))
		if i == maxUpVotes-1 {
			u.mu.Lock()
			first = u.timer
			u.mu.Unlock()
		}
	}
	u.mu.Lock()
	timer, immediate := u.timer, u.immediate
	u.mu.Unlock()
	u.flushMu.Unlock()
	if !immediate || timer != first {
		t.Fatalf("immediate flush scheduled: %v; the same timer after 100 more votes: %v", immediate, timer == first)
	}
	h.waitUp(func(m groups.Mirror) bool { return m.Op == groups.OpVotes && len(m.Votes) == maxUpVotes+100 })
}

// A vote batch reported committed has its votes acked here, each on its
// own link, but those the application refused; a report naming it again
// (the batch was redelivered and committed twice) acks nothing more.
func TestCommittedBatchAcksItsVotes(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.FlushDelay = 20 * time.Millisecond })
	a, b := h.dial(nil), h.dial(nil)
	a.hello("")
	b.hello("")
	a.send(`{"t":"vote","poll":"p1","choice":1,"id":"a1"}`)
	b.send(`{"t":"vote","poll":"p1","choice":0,"id":"b\"1"}`)
	var batch groups.Mirror
	h.waitUp(func(m groups.Mirror) bool {
		if m.Op != groups.OpVotes {
			return false
		}
		batch.Votes = append(batch.Votes, m.Votes...)
		batch.Batch = m.Batch
		return len(batch.Votes) == 2
	})
	if batch.Batch == 0 {
		t.Fatal("the vote batch has no number")
	}
	if h.srv.acks.waiting() != 2 {
		t.Fatalf("%d votes wait for their commit, want 2", h.srv.acks.waiting())
	}
	if len(batch.Votes) != 2 || batch.Votes[0].ID == batch.Votes[1].ID {
		t.Fatalf("votes relayed %+v", batch.Votes)
	}
	a.quiet(100 * time.Millisecond) // nothing before the commit
	// The second vote (whichever link cast it) is refused.
	refusedID := batch.Votes[1].ID
	h.down(groups.CommittedBatches([]groups.CommittedBatch{{Batch: batch.Batch, Refused: []int{1}}}))
	acked, quiet := a, b
	if refusedID == "a1" {
		acked, quiet = b, a
	}
	m := acked.nextJSON()
	if m["t"] != "ack" || m["id"] != batch.Votes[0].ID || m["seq"] == nil {
		t.Fatalf("ack %v, want one for %q with a seq", m, batch.Votes[0].ID)
	}
	quiet.quiet(150 * time.Millisecond)
	h.down(groups.CommittedBatches([]groups.CommittedBatch{{Batch: batch.Batch}}))
	acked.quiet(150 * time.Millisecond)
	quiet.quiet(50 * time.Millisecond)
	if h.srv.acks.waiting() != 0 {
		t.Fatalf("%d votes still wait", h.srv.acks.waiting())
	}
	if got := testutil.ToFloat64(h.srv.metrics.commitsUnmatched); got != 1 {
		t.Fatalf("unmatched commits %v, want 1", got)
	}
}

// Votes waiting for a commit that never comes are bounded: the oldest
// batches go first, counted.
func TestAckWaitsBounded(t *testing.T) {
	var a ackWaits
	links := make([]*link, maxWaitingVotes/4)
	for i := uint64(1); i <= 4; i++ {
		if d := a.expect(i, nil, links); d != 0 {
			t.Fatalf("batch %d pushed out %d votes", i, d)
		}
	}
	if _, ok := a.take(2); !ok {
		t.Fatal("batch 2 not waiting")
	}
	if d := a.expect(5, nil, links); d != 0 {
		t.Fatalf("room was made by taking batch 2, yet %d votes went", d)
	}
	if d := a.expect(6, nil, links); d != len(links) {
		t.Fatalf("pushed out %d votes, want batch 1's %d", d, len(links))
	}
	if _, ok := a.take(1); ok {
		t.Fatal("batch 1 still waits")
	}
	for _, n := range []uint64{3, 4, 5, 6} {
		if _, ok := a.take(n); !ok {
			t.Fatalf("batch %d lost", n)
		}
	}
	if a.waiting() != 0 || len(a.batches) != 0 {
		t.Fatalf("%d votes, %d batches left", a.waiting(), len(a.batches))
	}
}
