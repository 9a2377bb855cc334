//go:build linux

package wsepoll

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// recorder is a Handler that keeps what it is told.
type recorder struct {
	mu     sync.Mutex
	msgs   []string
	binary int
	closes []CloseInfo
	conns  []*Conn
	got    chan struct{}
	echo   bool
}

func (r *recorder) closeAt(i int) CloseInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closes[i]
}

func (r *recorder) messages() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.msgs...)
}

func newRecorder() *recorder { return &recorder{got: make(chan struct{}, 1024)} }

func (r *recorder) OnMessage(c *Conn, binary bool, data []byte) {
	r.mu.Lock()
	r.msgs = append(r.msgs, string(data))
	if binary {
		r.binary++
	}
	r.mu.Unlock()
	if r.echo {
		c.Send(Frame(data), "", false)
	}
	r.got <- struct{}{}
}

func (r *recorder) OnClose(c *Conn, info CloseInfo) {
	r.mu.Lock()
	r.closes = append(r.closes, info)
	r.mu.Unlock()
	r.got <- struct{}{}
}

func (r *recorder) wait(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		r.mu.Lock()
		ok := cond()
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-r.got:
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			t.Fatal("condition not met within 5 s")
		}
	}
}

type fixture struct {
	t   *testing.T
	tr  *Transport
	rec *recorder
	srv *httptest.Server
}

func newFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	tr, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, tr: tr, rec: newRecorder()}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := tr.Upgrade(w, r, f.rec)
		if err != nil {
			return
		}
		f.rec.mu.Lock()
		f.rec.conns = append(f.rec.conns, c)
		f.rec.mu.Unlock()
		if err := c.Start(); err != nil {
			t.Errorf("Start: %v", err)
		}
	}))
	t.Cleanup(func() {
		f.srv.Close()
		tr.Close()
	})
	return f
}

func (f *fixture) conn(i int) *Conn {
	f.rec.wait(f.t, func() bool { return len(f.rec.conns) > i })
	f.rec.mu.Lock()
	defer f.rec.mu.Unlock()
	return f.rec.conns[i]
}

// rawClient speaks frames byte by byte, to send what real clients would not.
type rawClient struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

const handshake = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"

func (f *fixture) raw(extra []byte) *rawClient {
	f.t.Helper()
	nc, err := net.Dial("tcp", strings.TrimPrefix(f.srv.URL, "http://"))
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { nc.Close() })
	// The upgrade request and (optionally) the first frames in one write.
	if _, err := nc.Write(append([]byte(handshake), extra...)); err != nil {
		f.t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 || resp.Header.Get("Sec-Websocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		f.t.Fatalf("handshake: %v %+v", err, resp)
	}
	return &rawClient{t: f.t, nc: nc, br: br}
}

// clientFrame builds a client frame; mask nil sends it unmasked.
func clientFrame(op byte, fin bool, payload []byte, mask []byte) []byte {
	var b []byte
	first := op
	if fin {
		first |= 0x80
	}
	mbit := byte(0)
	if mask != nil {
		mbit = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		b = []byte{first, mbit | byte(n)}
	case n <= 0xffff:
		b = []byte{first, mbit | 126, 0, 0}
		binary.BigEndian.PutUint16(b[2:], uint16(n))
	default:
		b = []byte{first, mbit | 127, 0, 0, 0, 0, 0, 0, 0, 0}
		binary.BigEndian.PutUint64(b[2:], uint64(n))
	}
	if mask == nil {
		return append(b, payload...)
	}
	b = append(b, mask...)
	for i, c := range payload {
		b = append(b, c^mask[i%4])
	}
	return b
}

var testMask = []byte{0x12, 0x34, 0x56, 0x78}

func (c *rawClient) send(b []byte) {
	c.t.Helper()
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatal(err)
	}
}

// next reads one server frame; server frames are never masked.
func (c *rawClient) next() (op byte, payload []byte) {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	var h [2]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		c.t.Fatalf("reading a frame: %v", err)
	}
	if h[1]&0x80 != 0 {
		c.t.Fatal("server frame is masked")
	}
	n := int(h[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		io.ReadFull(c.br, l[:])
		n = int(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		io.ReadFull(c.br, l[:])
		n = int(binary.BigEndian.Uint64(l[:]))
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(c.br, payload); err != nil {
		c.t.Fatalf("reading a payload: %v", err)
	}
	return h[0] & 0x0f, payload
}

// closed expects a close frame with code, then the end of the stream.
func (c *rawClient) closed(code int) {
	c.t.Helper()
	op, p := c.next()
	if op != opClose || len(p) < 2 || int(binary.BigEndian.Uint16(p)) != code {
		c.t.Fatalf("got op %#x %q, want close %d", op, p, code)
	}
	// As a client does after the server's close: end the TCP stream.
	c.nc.(*net.TCPConn).CloseWrite()
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.br.ReadByte(); err != io.EOF {
		c.t.Fatalf("after close: %v, want EOF", err)
	}
}

func TestEchoWithARealClient(t *testing.T) {
	f := newFixture(t, testConfig(Config{}))
	f.rec.echo = true
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, strings.Replace(f.srv.URL, "http", "ws", 1), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	for _, msg := range []string{"hello", strings.Repeat("x", 200), strings.Repeat("é", 7000)} {
		if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_, got, err := c.Read(ctx)
		if err != nil || string(got) != msg {
			t.Fatalf("echo of %d bytes: %d bytes, %v", len(msg), len(got), err)
		}
	}
	if err := c.Close(websocket.StatusNormalClosure, "bye"); err != nil {
		t.Fatalf("close handshake: %v", err)
	}
	f.rec.wait(t, func() bool { return len(f.rec.closes) == 1 })
	if ci := f.rec.closeAt(0); ci.PeerCode != 1000 || ci.PeerReason != "bye" || ci.Code != 1000 || ci.Err != nil {
		t.Fatalf("close info %+v", ci)
	}
	if f.tr.Len() != 0 {
		t.Fatalf("Len %d after close", f.tr.Len())
	}
}

func TestFramesPipelinedWithTheUpgrade(t *testing.T) {
	f := newFixture(t, testConfig(Config{}))
	first := clientFrame(opText, true, []byte(`{"t":"hello"}`), testMask)
	second := clientFrame(opText, true, []byte("second"), testMask)
	f.raw(append(first, second...))
	f.rec.wait(t, func() bool { return len(f.rec.msgs) == 2 })
	if f.rec.messages()[0] != `{"t":"hello"}` || f.rec.messages()[1] != "second" {
		t.Fatalf("messages %q", f.rec.msgs)
	}
}

func TestFragmentsAndInterleavedControlFrames(t *testing.T) {
	f := newFixture(t, testConfig(Config{}))
	c := f.raw(nil)
	var b []byte
	b = append(b, clientFrame(opText, false, []byte("hel"), testMask)...)
	b = append(b, clientFrame(opPing, true, []byte("p1"), testMask)...)
	b = append(b, clientFrame(opContinuation, false, []byte("lo "), testMask)...)
	b = append(b, clientFrame(opContinuation, true, []byte("world"), testMask)...)
	// Byte by byte: every split point of a frame must be handled.
	for i := range b {
		c.send(b[i : i+1])
		if i%7 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	if op, p := c.next(); op != opPong || string(p) != "p1" {
		t.Fatalf("got %#x %q, want pong p1", op, p)
	}
	f.rec.wait(t, func() bool { return len(f.rec.msgs) == 1 })
	if f.rec.messages()[0] != "hello world" {
		t.Fatalf("assembled %q", f.rec.msgs[0])
	}
	// A binary message is reported as binary.
	c.send(clientFrame(opBinary, true, []byte{0xff, 0}, testMask))
	f.rec.wait(t, func() bool { return f.rec.binary == 1 })
}

func TestProtocolViolationsClose(t *testing.T) {
	cases := []struct {
		name  string
		frame []byte
		code  int
		err   error
	}{
		{"unmasked", clientFrame(opText, true, []byte("x"), nil), CodeProtocolError, ErrProtocol},
		{"reserved bits", func() []byte { b := clientFrame(opText, true, []byte("x"), testMask); b[0] |= 0x40; return b }(), CodeProtocolError, ErrProtocol},
		{"reserved opcode", clientFrame(0x3, true, []byte("x"), testMask), CodeProtocolError, ErrProtocol},
		{"fragmented ping", clientFrame(opPing, false, nil, testMask), CodeProtocolError, ErrProtocol},
		{"long ping", clientFrame(opPing, true, make([]byte, 126), testMask), CodeProtocolError, ErrProtocol},
		{"stray continuation", clientFrame(opContinuation, true, []byte("x"), testMask), CodeProtocolError, ErrProtocol},
		{"text inside a fragmented message", append(clientFrame(opText, false, []byte("a"), testMask), clientFrame(opText, true, []byte("b"), testMask)...), CodeProtocolError, ErrProtocol},
		{"oversized", clientFrame(opText, true, make([]byte, 1025), testMask), CodeTooBig, ErrTooBig},
		{"oversized in fragments", append(clientFrame(opText, false, make([]byte, 600), testMask), clientFrame(opContinuation, true, make([]byte, 600), testMask)...), CodeTooBig, ErrTooBig},
		{"invalid UTF-8", clientFrame(opText, true, []byte{0xc3, 0x28}, testMask), CodeInvalidData, ErrInvalidUTF8},
		{"bad close code", clientFrame(opClose, true, []byte{0x03, 0xed}, testMask), CodeProtocolError, ErrProtocol},
		{"one-byte close", clientFrame(opClose, true, []byte{0x03}, testMask), CodeProtocolError, ErrProtocol},
	}
	f := newFixture(t, testConfig(Config{MaxMessage: 1024}))
	good := f.raw(nil)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bad := f.raw(nil)
			bad.t = t
			bad.send(tc.frame)
			bad.closed(tc.code)
			f.rec.wait(t, func() bool { return len(f.rec.closes) == i+1 })
			if ci := f.rec.closeAt(i); !errors.Is(ci.Err, tc.err) || ci.Code != tc.code {
				t.Fatalf("close info %+v, want %v", ci, tc.err)
			}
			// The other connection is unaffected.
			good.t = t
			good.send(clientFrame(opPing, true, []byte{byte(i)}, testMask))
			if op, p := good.next(); op != opPong || p[0] != byte(i) {
				t.Fatalf("good connection: %#x %v", op, p)
			}
		})
	}
}

func TestServerCloseHandshake(t *testing.T) {
	f := newFixture(t, testConfig(Config{CloseTimeout: 200 * time.Millisecond}))
	// A peer that answers the close.
	c := f.raw(nil)
	f.conn(0).Close(4001, "hello timeout")
	op, p := c.next()
	if op != opClose || binary.BigEndian.Uint16(p) != 4001 || string(p[2:]) != "hello timeout" {
		t.Fatalf("close frame %#x %q", op, p)
	}
	// Data sent after our close is not delivered; the peer's close ends it.
	c.send(clientFrame(opText, true, []byte("late"), testMask))
	c.send(clientFrame(opClose, true, []byte{0x0f, 0xa1}, testMask))
	f.rec.wait(t, func() bool { return len(f.rec.closes) == 1 })
	if ci := f.rec.closeAt(0); ci.Err != nil || ci.Code != 4001 || ci.PeerCode != 4001 || len(f.rec.messages()) != 0 {
		t.Fatalf("close info %+v, messages %q", ci, f.rec.msgs)
	}
	// A peer that never answers is dropped after CloseTimeout.
	f.raw(nil)
	f.conn(1).Close(1012, "service restart")
	f.rec.wait(t, func() bool { return len(f.rec.closes) == 2 })
	if ci := f.rec.closeAt(1); !errors.Is(ci.Err, ErrCloseTimeout) || ci.Code != 1012 {
		t.Fatalf("close info %+v", ci)
	}
	// Sending to a closed connection says so.
	if r := f.conn(1).Send(Frame([]byte("x")), "", true); r != Closed {
		t.Fatalf("Send after close: %v", r)
	}
}

func TestPeerVanishes(t *testing.T) {
	f := newFixture(t, testConfig(Config{}))
	c := f.raw(nil)
	f.conn(0)
	c.nc.Close()
	f.rec.wait(t, func() bool { return len(f.rec.closes) == 1 })
	if ci := f.rec.closeAt(0); !errors.Is(ci.Err, ErrPeerGone) || ci.PeerCode != 0 {
		t.Fatalf("close info %+v", ci)
	}
}

// TestSlowReader: a client that stops reading fills its socket, then its
// backlog: latest-state frames replace each other, non-critical frames are
// dropped past QueueSoft, Overflow is reported past QueueHard, and a
// backlog without progress is dropped after WriteTimeout.
func TestSlowReader(t *testing.T) {
	f := newFixture(t, testConfig(Config{QueueSoft: 4, QueueHard: 8, WriteTimeout: 300 * time.Millisecond}))
	c := f.raw(nil)
	_ = c
	conn := f.conn(0)
	big := Frame(bytes.Repeat([]byte("x"), 256<<10))
	for i := 0; i < 200 && conn.Backlog() == 0; i++ {
		if r := conn.Send(big, "", true); r != Sent && r != Queued {
			t.Fatalf("send %d: %v", i, r)
		}
	}
	if conn.Backlog() == 0 {
		t.Fatal("the socket never filled up")
	}
	if r := conn.Send(Frame([]byte("results 1")), "results:p1", false); r != Queued {
		t.Fatalf("first latest-state frame: %v", r)
	}
	if r := conn.Send(Frame([]byte("results 2")), "results:p1", false); r != Replaced {
		t.Fatalf("second latest-state frame: %v", r)
	}
	var got []SendResult
	for i := 0; i < 10; i++ {
		got = append(got, conn.Send(Frame([]byte("notice")), "", false))
	}
	// backlog: partial + results + 3 notices = soft limit of 4 queued; then drops.
	want := []SendResult{Queued, Queued, Queued, Dropped, Dropped}
	for i, w := range want {
		if got[i] != w {
			t.Fatalf("non-critical sends %v, want prefix %v", got, want)
		}
	}
	for i := 0; i < 10; i++ {
		r := conn.Send(Frame([]byte("critical")), "", true)
		if i < 4 && r != Queued || i >= 4 && r != Overflow {
			t.Fatalf("critical send %d: %v", i, r)
		}
	}
	f.rec.wait(t, func() bool { return len(f.rec.closes) == 1 })
	if ci := f.rec.closeAt(0); !errors.Is(ci.Err, ErrWriteTimeout) {
		t.Fatalf("close info %+v", ci)
	}
}

// TestBacklogDrains: a reader that is slow but reads gets everything, in
// order.
func TestBacklogDrains(t *testing.T) {
	f := newFixture(t, testConfig(Config{QueueSoft: 1000, QueueHard: 1000}))
	c := f.raw(nil)
	conn := f.conn(0)
	payload := bytes.Repeat([]byte("y"), 64<<10)
	const n = 64 // 4 MiB: more than the socket buffers hold
	queued := 0
	for i := 0; i < n; i++ {
		p := append([]byte{byte(i)}, payload...)
		switch conn.Send(Frame(p), "", true) {
		case Queued:
			queued++
		case Sent:
		default:
			t.Fatal("send refused")
		}
	}
	if queued == 0 {
		t.Fatal("nothing was queued; the test does not test the backlog")
	}
	for i := 0; i < n; i++ {
		op, p := c.next()
		if op != opText || p[0] != byte(i) || len(p) != len(payload)+1 {
			t.Fatalf("frame %d: op %#x first byte %d len %d", i, op, p[0], len(p))
		}
	}
	if conn.Backlog() != 0 {
		t.Fatalf("backlog %d after draining", conn.Backlog())
	}
}

// TestIdleConnectionsHoldNoGoroutine opens many connections and checks the
// goroutine count does not grow with them.
func TestIdleConnectionsHoldNoGoroutine(t *testing.T) {
	f := newFixture(t, testConfig(Config{}))
	addr := strings.TrimPrefix(f.srv.URL, "http://")
	// Warm up the HTTP server (its listener goroutine) first.
	f.raw(nil)
	f.conn(0)
	time.Sleep(50 * time.Millisecond)
	base := runtime.NumGoroutine()
	const n = 300
	var conns []net.Conn
	for i := 0; i < n; i++ {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, nc)
		nc.Write([]byte(handshake))
		br := bufio.NewReader(nc)
		if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 101 {
			t.Fatal(err)
		}
	}
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	f.rec.wait(t, func() bool { return f.tr.Len() == n+1 })
	time.Sleep(50 * time.Millisecond)
	if g := runtime.NumGoroutine(); g > base+5 {
		t.Fatalf("%d goroutines with %d idle connections, %d before: connections hold goroutines", g, n, base)
	}
	t.Logf("%d idle connections: %d goroutines (%d before)", n, runtime.NumGoroutine(), base)
}

func TestCloseStopsEverything(t *testing.T) {
	base := runtime.NumGoroutine()
	tr, err := New(Config{Pollers: 2})
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, err := tr.Upgrade(w, r, rec); err == nil {
			c.Start()
		}
	}))
	f := &fixture{t: t, tr: tr, rec: rec, srv: srv}
	a, b := f.raw(nil), f.raw(nil)
	rec.wait(t, func() bool { return tr.Len() == 2 })
	tr.Close()
	if rec.wait(t, func() bool { return len(rec.closes) == 2 }); !errors.Is(rec.closeAt(0).Err, ErrTransportClosed) {
		t.Fatalf("closes %+v", rec.closes)
	}
	for _, c := range []*rawClient{a, b} {
		c.nc.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.br.ReadByte(); err != io.EOF {
			t.Fatalf("client after Close: %v", err)
		}
	}
	srv.Close()
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if g := runtime.NumGoroutine(); g > base {
		t.Fatalf("%d goroutines after Close, %d before", g, base)
	}
}

func TestBadUpgradeRefused(t *testing.T) {
	f := newFixture(t, testConfig(Config{}))
	resp, err := http.Get(f.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("plain GET: %d, want 400", resp.StatusCode)
	}
}

// TestFloodAfterViolationIsCutShort: a peer that breaks the protocol and
// keeps sending is dropped once it has sent maxDiscard more bytes, and a
// connection on the same poller is served meanwhile.
func TestFloodAfterViolationIsCutShort(t *testing.T) {
	f := newFixture(t, testConfig(Config{Pollers: 1, CloseTimeout: 30 * time.Second}))
	good := f.raw(nil)
	bad := f.raw(nil)
	bad.send(clientFrame(opText, true, []byte("x"), nil)) // unmasked
	go func() {
		junk := make([]byte, 64<<10)
		for i := 0; i < 64; i++ {
			if _, err := bad.nc.Write(junk); err != nil {
				return
			}
		}
	}()
	good.send(clientFrame(opPing, true, []byte("still here"), testMask))
	if op, p := good.next(); op != opPong || string(p) != "still here" {
		t.Fatalf("good connection: %#x %q", op, p)
	}
	f.rec.wait(t, func() bool { return len(f.rec.closes) == 1 })
	if ci := f.rec.closeAt(0); !errors.Is(ci.Err, ErrProtocol) {
		t.Fatalf("close info %+v", ci)
	}
}
