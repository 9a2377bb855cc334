package connection

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/backchannel/backchannel/groups"
	"github.com/backchannel/backchannel/internal/bus"
	"github.com/backchannel/backchannel/internal/control"
	"github.com/backchannel/backchannel/internal/identity"
)

// rawLink is a WebSocket client with no goroutine of its own: frames are
// written and read synchronously on a net.Conn.
type rawLink struct {
	t  testing.TB
	nc net.Conn
	br *bufio.Reader
}

func dialRaw(t testing.TB, httpURL string) *rawLink {
	t.Helper()
	u := strings.TrimPrefix(httpURL, "http://")
	u = strings.TrimPrefix(u, "ws://")
	u = strings.TrimSuffix(u, "/ws")
	nc, err := net.Dial("tcp", u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	fmt.Fprintf(nc, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", u)
	br := bufio.NewReaderSize(nc, 512)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", err, resp)
	}
	return &rawLink{t: t, nc: nc, br: br}
}

func (r *rawLink) send(s string) {
	r.t.Helper()
	p := []byte(s)
	mask := [4]byte{1, 2, 3, 4}
	b := []byte{0x81}
	switch n := len(p); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	default:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	}
	b = append(b, mask[:]...)
	for i, c := range p {
		b = append(b, c^mask[i%4])
	}
	if _, err := r.nc.Write(b); err != nil {
		r.t.Fatal(err)
	}
}

// next returns the next data frame; it answers nothing (pings are skipped)
// and reports a close frame as ("close", code).
func (r *rawLink) next() ([]byte, int) {
	r.t.Helper()
	r.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		var h [2]byte
		if _, err := io.ReadFull(r.br, h[:]); err != nil {
			r.t.Fatalf("read: %v", err)
		}
		n := int(h[1] & 0x7f)
		switch n {
		case 126:
			var l [2]byte
			io.ReadFull(r.br, l[:])
			n = int(binary.BigEndian.Uint16(l[:]))
		case 127:
			var l [8]byte
			io.ReadFull(r.br, l[:])
			n = int(binary.BigEndian.Uint64(l[:]))
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(r.br, p); err != nil {
			r.t.Fatalf("read: %v", err)
		}
		switch h[0] & 0x0f {
		case 0x8:
			return nil, int(binary.BigEndian.Uint16(p))
		case 0x9, 0xa:
			continue
		}
		return p, 0
	}
}

func (r *rawLink) nextJSON() map[string]any {
	r.t.Helper()
	f, code := r.next()
	if code != 0 {
		r.t.Fatalf("closed with %d", code)
	}
	var m map[string]any
	if err := json.Unmarshal(f, &m); err != nil {
		r.t.Fatalf("%s: %v", f, err)
	}
	return m
}

func (r *rawLink) hello(token string) map[string]any {
	r.t.Helper()
	if token != "" {
		r.send(`{"t":"hello","token":"` + token + `"}`)
	} else {
		r.send(`{"t":"hello"}`)
	}
	w := r.nextJSON()
	if w["t"] != "welcome" {
		r.t.Fatalf("welcome: %v", w)
	}
	return w
}

// TestIdleLinksHoldNoGoroutine: links that said hello and sit idle add no
// goroutine to the server (the clients here have none either).
func TestIdleLinksHoldNoGoroutine(t *testing.T) {
	h := newHarness(t, nil)
	dialRaw(t, h.http.URL).hello("") // starts the transport and wheel
	time.Sleep(50 * time.Millisecond)
	base := runtime.NumGoroutine()
	const n = 300
	for i := 0; i < n; i++ {
		dialRaw(t, h.http.URL).hello("")
	}
	waitFor(t, func() bool { return h.srv.Links() == n+1 })
	time.Sleep(100 * time.Millisecond) // let the HTTP handlers return
	if g := runtime.NumGoroutine(); g > base+5 {
		t.Fatalf("%d goroutines with %d more idle links (%d before)", g, n, base)
	}
}

type resultsMsg struct {
	Poll   string `json:"poll"`
	Counts []int  `json:"counts"`
}

func (resultsMsg) MessageType() string { return control.TypeResults }

// TestResume: a client that reconnects gets the group messages it missed,
// in order, then welcome recovered:true; with a gap the history cannot
// fill, a different epoch or a group it may not see, recovered:false and
// the resume goes up to the application.
func TestResume(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.HistorySize = 4 })
	send := func(off uint64, m control.ServerMessage) []byte {
		b := control.EncodeGroup(m, "stream:demo", off, "E1")
		h.down(groups.SendGroup("stream:demo", b, false))
		return b
	}
	a := dialRaw(t, h.http.URL)
	w := a.hello("")
	sid, token := w["sid"].(string), w["token"].(string)
	h.down(groups.SetAttrs(sid, groups.Attrs{"stream": "demo"}))
	waitFor(t, func() bool { return h.srv.GroupCount("stream:demo") == 1 })
	var sent [][]byte
	for off := uint64(1); off <= 3; off++ {
		sent = append(sent, send(off, control.Notice{Text: fmt.Sprint("n", off)}))
		if got, _ := a.next(); !bytes.Equal(got, sent[off-1]) {
			t.Fatalf("live message %d: %s", off, got)
		}
	}
	a.nc.Close()
	waitFor(t, func() bool { return h.srv.Links() == 0 })
	// Missed while away: 4 and 5; the second results supersedes the first.
	sent = append(sent, send(4, resultsMsg{Poll: "p1", Counts: []int{1, 0}}))
	sent = append(sent, send(5, resultsMsg{Poll: "p1", Counts: []int{2, 0}}))
	time.Sleep(50 * time.Millisecond)

	resume := func(offsets, epochs string) (*rawLink, string, [][]byte, bool) {
		t.Helper()
		c := dialRaw(t, h.http.URL)
		w := c.hello(token)
		if w["uid"] == "" {
			t.Fatal("no uid")
		}
		c.send(`{"t":"resume","sid":"` + sid + `","offsets":` + offsets + `,"epochs":` + epochs + `}`)
		var replay [][]byte
		for {
			f, code := c.next()
			if code != 0 {
				t.Fatalf("closed %d", code)
			}
			var m map[string]any
			json.Unmarshal(f, &m)
			if m["t"] == "welcome" {
				if m["sid"] != w["sid"] || m["token"] != nil {
					t.Fatalf("resume answer %v", m)
				}
				return c, w["sid"].(string), replay, m["recovered"] == true
			}
			replay = append(replay, f)
		}
	}
	_, newSid, replay, ok := resume(`{"stream:demo":3}`, `{"stream:demo":"E1"}`)
	if !ok || len(replay) != 1 || !bytes.Equal(replay[0], sent[4]) {
		t.Fatalf("recovered %v, replay %q; want the latest results only", ok, replay)
	}
	relayed := func(sid string) bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, m := range h.up {
			if m.Op == groups.OpClientMessage && m.Type == control.TypeResume && m.Link == sid {
				return true
			}
		}
		return false
	}
	time.Sleep(100 * time.Millisecond)
	if relayed(newSid) {
		t.Fatal("a recovered resume was relayed upward")
	}
	// Nothing missed.
	if _, _, replay, ok := resume(`{"stream:demo":5}`, `{"stream:demo":"E1"}`); !ok || len(replay) != 0 {
		t.Fatalf("up to date: recovered %v, replay %d", ok, len(replay))
	}
	// A gap the history no longer covers: 6..9 push 1..5 out (size 4).
	for off := uint64(6); off <= 9; off++ {
		send(off, control.Notice{Text: fmt.Sprint("n", off)})
	}
	time.Sleep(50 * time.Millisecond)
	for _, tc := range []struct{ name, offsets, epochs string }{
		{"gap", `{"stream:demo":3}`, `{"stream:demo":"E1"}`},
		{"other epoch", `{"stream:demo":8}`, `{"stream:demo":"E0"}`},
		{"no epoch", `{"stream:demo":8}`, `{}`},
		{"group not its own", `{"country:BR":1}`, `{"country:BR":"E1"}`},
		{"offset from the future", `{"stream:demo":99}`, `{"stream:demo":"E1"}`},
	} {
		_, sid, _, ok := resume(tc.offsets, tc.epochs)
		if ok {
			t.Fatalf("%s: recovered", tc.name)
		}
		waitFor(t, func() bool { return relayed(sid) })
	}
	// Within the history after the gap: 7..9 replayed in order.
	_, _, replay, ok = resume(`{"stream:demo":6}`, `{"stream:demo":"E1"}`)
	if !ok || len(replay) != 3 || !strings.Contains(string(replay[0]), `"off":7`) || !strings.Contains(string(replay[2]), `"off":9`) {
		t.Fatalf("recovered %v replay %q", ok, replay)
	}
}

// TestSlowConsumerLatestStateFirst: a client that stops reading loses
// superseded results and non-critical messages first; once even critical
// messages overflow its queue it is closed with 4009.
func TestSlowConsumerLatestStateFirst(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.QueueSoft, c.QueueHard = 4, 8 })
	stalled := dialRaw(t, h.http.URL)
	w := stalled.hello("")
	sid := w["sid"].(string)
	h.down(groups.SetAttrs(sid, groups.Attrs{"stream": "demo"}))
	good := dialRaw(t, h.http.URL)
	gw := good.hello("")
	h.down(groups.SetAttrs(gw["sid"].(string), groups.Attrs{"stream": "demo"}))
	waitFor(t, func() bool { return h.srv.GroupCount("stream:demo") == 2 })
	dropped := func() float64 {
		mfs, _ := h.reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "backchannel_connection_messages_dropped_total" {
				return mf.GetMetric()[0].GetCounter().GetValue()
			}
		}
		return 0
	}
	l := h.srv.linkBySid(sid)
	// Fill the stalled link's socket so that its queue starts to grow.
	big := newFrame(control.EncodeGroup(control.Notice{Text: strings.Repeat("x", 256<<10)}, "stream:demo", 0, "E"))
	for i := 0; i < 100 && l.ws.Send(big, "", true) == 0; i++ {
	}
	// One at a time: results sent in a burst may be coalesced before they
	// reach the links (TestLatestFanoutOrderAndReplace), and this test is
	// about the stalled link's own queue.
	for i := 1; i <= 6; i++ {
		h.down(groups.SendGroup("stream:demo", control.EncodeGroup(resultsMsg{Poll: "p1", Counts: []int{i}}, "stream:demo", uint64(i), "E"), false))
		if m := good.nextJSON(); m["off"] != float64(i) {
			t.Fatalf("good link got %v", m)
		}
	}
	// Five of six results replaced a queued one: one waits.
	waitFor(t, func() bool { return dropped() == 5 })
	for i := 0; i < 12; i++ {
		h.down(groups.SendGroup("stream:demo", control.EncodeGroup(control.StreamStatus{Stream: "demo", State: "live"}, "stream:demo", uint64(7+i), "E"), true))
		good.nextJSON()
	}
	waitFor(t, func() bool { return h.closes("slow_consumer") == 1 })
	// It cannot read our close frame either: dropped after CloseTimeout.
	waitFor(t, func() bool { return h.srv.Links() == 1 })
}

// resetBus is a memory bus that also signals resets, as bus.Redis does.
type resetBus struct {
	*bus.Memory
	resets chan struct{}
}

func (b *resetBus) Resets() <-chan struct{} { return b.resets }

func TestResetReannouncesLinks(t *testing.T) {
	mem := bus.NewMemory()
	rb := &resetBus{Memory: mem, resets: make(chan struct{}, 1)}
	h := newHarness(t, func(c *Config) { c.Bus = rb })
	a, b := dialRaw(t, h.http.URL), dialRaw(t, h.http.URL)
	sa := a.hello("")["sid"].(string)
	sb := b.hello("")["sid"].(string)
	h.down(groups.SetAttrs(sa, groups.Attrs{"stream": "demo", "x-team": "red"}))
	waitFor(t, func() bool { return h.srv.GroupCount("stream:demo") == 1 })
	rb.resets <- struct{}{}
	opens := func(sid string) []groups.Mirror {
		h.mu.Lock()
		defer h.mu.Unlock()
		var out []groups.Mirror
		for _, m := range h.up {
			if m.Op == groups.OpLinkOpened && m.Link == sid {
				out = append(out, m)
			}
		}
		return out
	}
	waitFor(t, func() bool { return len(opens(sa)) == 2 && len(opens(sb)) == 2 })
	again := opens(sa)[1]
	if again.Attrs["stream"] != "demo" || again.Attrs["x-team"] != "red" || again.Attrs["conn"] != "c1" ||
		again.UID != opens(sa)[0].UID || again.Facts == nil || !bytes.Contains(again.Facts.Hello, []byte(`"hello"`)) {
		t.Fatalf("re-announcement %+v", again)
	}
}

// TestDrainMovesLinksToTheOtherServer: two connection servers behind a
// /connect that skips draining ones; shutting one down moves every one of
// its links (same users) to the other, none lost.
func TestDrainMovesLinksToTheOtherServer(t *testing.T) {
	mem := bus.NewMemory()
	defer mem.Close()
	ids := identity.NewIssuer([]byte("s"))
	var servers []*Server
	var urls []string
	for _, id := range []string{"c1", "c2"} {
		s, err := New(Config{ID: id, Bus: mem, Identity: ids, DrainWindow: 300 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		hs := httptest.NewServer(s.Handler())
		defer hs.Close()
		servers, urls = append(servers, s), append(urls, hs.URL)
	}
	defer servers[1].Shutdown(context.Background())
	connect := func() string {
		for i, s := range servers {
			if !s.Draining() {
				return urls[i]
			}
		}
		return ""
	}
	const n = 20
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	where := map[string]string{} // uid → server URL
	reconnects := 0
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			token := ""
			for ctx.Err() == nil {
				url := connect()
				c := dialRaw(t, url)
				w := c.hello(token)
				token = w["token"].(string)
				mu.Lock()
				if _, seen := where[w["uid"].(string)]; seen {
					reconnects++
				}
				where[w["uid"].(string)] = url
				mu.Unlock()
				for ctx.Err() == nil {
					c.nc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
					var hdr [2]byte
					if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
						if ne, ok := err.(net.Error); ok && ne.Timeout() {
							continue
						}
						break
					}
					if hdr[0]&0x0f == 0x8 {
						// Told to go: reconnect elsewhere after a jittered pause.
						time.Sleep(time.Duration(10+rand.IntN(40)) * time.Millisecond)
						break
					}
				}
				c.nc.Close()
			}
		}()
	}
	waitFor(t, func() bool { return servers[0].Links() == n })
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	start := time.Now()
	if err := servers[0].Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("drain took %v: closes were not spread over the window", d)
	}
	waitFor(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return servers[1].Links() == n && reconnects == n
	})
	mu.Lock()
	defer mu.Unlock()
	if len(where) != n || reconnects != n {
		t.Fatalf("%d users, %d reconnects; want %d and %d", len(where), reconnects, n, n)
	}
	for uid, url := range where {
		if url != urls[1] {
			t.Fatalf("user %s still on %s", uid, url)
		}
	}
	cancel()
	wg.Wait()
}

// TestCoderTransport runs the main behaviours again on the coder/websocket
// transport, which stays available for TLS listeners.
func TestCoderTransport(t *testing.T) {
	transportUnderTest = TransportCoder
	defer func() { transportUnderTest = TransportEpoll }()
	runMainBehaviours(t)
}

// runMainBehaviours runs the tests that every transport variant must pass.
func runMainBehaviours(t *testing.T) {
	t.Run("hello", TestHelloWelcomeAndIdentity)
	t.Run("downward", TestDownwardMessages)
	t.Run("violations", TestViolationsCloseOnlyThatLink)
	t.Run("slow", TestSlowConsumerClosed)
	t.Run("keepalive", TestKeepaliveClosesDeadLinks)
	t.Run("shutdown", TestShutdownClosesEveryLink)
	t.Run("resume", TestResume)
}

// TestPlainSyscallsTransport runs them again on the epoll transport with
// io_uring batching off (--io-uring=false, or a kernel without it).
func TestPlainSyscallsTransport(t *testing.T) {
	plainSyscallsUnderTest = true
	defer func() { plainSyscallsUnderTest = false }()
	runMainBehaviours(t)
	t.Run("gauge", func(t *testing.T) { checkIOUringGauge(t, 0) })
}

// The gauge says which path the epoll transport took; this machine's
// kernel has io_uring, so the default run must be batched.
func TestIOUringGauge(t *testing.T) { checkIOUringGauge(t, 1) }

func checkIOUringGauge(t *testing.T, want float64) {
	h := newHarness(t, nil)
	h.dial(nil).hello("") // the transport starts with the first link
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "backchannel_connection_io_uring" {
			if got := mf.GetMetric()[0].GetGauge().GetValue(); got != want {
				t.Fatalf("backchannel_connection_io_uring = %v, want %v", got, want)
			}
			return
		}
	}
	t.Fatal("no backchannel_connection_io_uring gauge")
}

// TestTLSLinksUseTheCoderTransport: a listener that terminates TLS itself
// still serves control links.
func TestTLSLinksUseTheCoderTransport(t *testing.T) {
	srv, err := New(Config{ID: "c1", Bus: bus.NewMemory(), Identity: identity.NewIssuer([]byte("s"))})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewTLSServer(srv.Handler())
	defer hs.Close()
	defer srv.Shutdown(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "wss"+strings.TrimPrefix(hs.URL, "https"), &websocket.DialOptions{HTTPClient: hs.Client()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"t":"hello"}`)); err != nil {
		t.Fatal(err)
	}
	_, w, err := c.Read(ctx)
	if err != nil || !bytes.Contains(w, []byte(`"t":"welcome"`)) {
		t.Fatalf("welcome over TLS: %s %v", w, err)
	}
}
