//go:build linux

package wsepoll

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/backchannel/backchannel/internal/uring"
	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// Config tunes a Transport. Zero fields take the defaults in their comments.
type Config struct {
	MaxMessage   int           // largest message payload accepted; larger ones close with 1009 (16 KiB)
	Pollers      int           // epoll instances, one goroutine each (GOMAXPROCS, at most 8)
	QueueSoft    int           // backlog past which non-critical frames are dropped (64)
	QueueHard    int           // backlog past which Send reports Overflow (256)
	WriteTimeout time.Duration // a backlog that makes no progress for this long drops the connection (10 s)
	CloseTimeout time.Duration // how long to wait for the peer's close frame (2 s)
	DeferDelay   time.Duration // longest a deferred frame (Conn.Defer) waits for company (20 ms)
	// WriteDeferredWhenQuiet writes deferred frames before their delay is
	// up once a poller has had nothing to read for quietAfter: a frame
	// waits to share a write only while the server is busy, where sharing
	// saves CPU; a quiet server has nothing to save, and the last replies
	// of a burst go out at once instead of a DeferDelay later.
	WriteDeferredWhenQuiet bool
	// OnRoundEnd, when set, is called by each poller goroutine after it
	// has read the links a round found ready, before its writes: the
	// place to pass on what the round's messages produced.
	OnRoundEnd func()
	// PlainSyscalls turns off io_uring batching: every socket read and
	// write is its own system call. Without io_uring in the kernel (or
	// allowed by seccomp) the transport makes plain calls anyway.
	PlainSyscalls bool
	Logger        *slog.Logger
}

// Transport accepts WebSocket connections and serves them from its pollers.
type Transport struct {
	cfg     Config
	pollers []*poller
	next    atomic.Uint64 // connection ids
	count   atomic.Int64
	wg      sync.WaitGroup
	once    sync.Once
	closed  atomic.Bool

	ringOK      bool        // io_uring batching is on
	batches     chan *Batch // idle write batches (Transport.Batch)
	batchesMade atomic.Int32
	batchMu     sync.Mutex // Release against closeBatches
}

// New starts a transport's poller goroutines; Close stops them.
func New(cfg Config) (*Transport, error) {
	if cfg.MaxMessage <= 0 {
		cfg.MaxMessage = 16 << 10
	}
	if cfg.Pollers <= 0 {
		cfg.Pollers = min(runtime.GOMAXPROCS(0), 8)
	}
	if cfg.QueueSoft <= 0 {
		cfg.QueueSoft = 64
	}
	if cfg.QueueHard < cfg.QueueSoft {
		cfg.QueueHard = max(256, cfg.QueueSoft)
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.CloseTimeout <= 0 {
		cfg.CloseTimeout = 2 * time.Second
	}
	if cfg.DeferDelay <= 0 {
		cfg.DeferDelay = 20 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	t := &Transport{cfg: cfg, batches: make(chan *Batch, 4*cfg.Pollers)}
	if !cfg.PlainSyscalls {
		if r, err := uring.New(1); err != nil {
			cfg.Logger.Info("wsepoll: io_uring not available, one system call per socket read and write", "err", err)
		} else {
			r.Close()
			t.ringOK = true
		}
	}
	for range cfg.Pollers {
		p, err := newPoller(t)
		if err != nil {
			for _, p := range t.pollers {
				unix.Close(p.epfd)
				unix.Close(p.evfd)
			}
			return nil, fmt.Errorf("wsepoll: %w", err)
		}
		t.pollers = append(t.pollers, p)
	}
	for _, p := range t.pollers {
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			p.run()
		}()
	}
	return t, nil
}

func (t *Transport) sweepInterval() time.Duration {
	d := min(t.cfg.WriteTimeout, t.cfg.CloseTimeout) / 4
	return min(max(d, 10*time.Millisecond), 250*time.Millisecond)
}

func (t *Transport) log(msg string, err error) { t.cfg.Logger.Error("wsepoll: "+msg, "err", err) }

// Len returns the number of open connections.
func (t *Transport) Len() int { return int(t.count.Load()) }

// upgrader checks the request (GET, HTTP/1.1, Upgrade, Connection,
// Sec-WebSocket-Key, version 13) and answers 101; it refuses a bad request
// with 4xx. No extension is negotiated, so compressed frames are refused.
var upgrader = ws.HTTPUpgrader{}

// Upgrade answers a WebSocket upgrade request and takes over the socket:
// the HTTP server's goroutine, buffers and poller registration are
// released, and the connection is served by a poller. h receives nothing
// until Start. On error the response has been written and the socket
// closed.
func (t *Transport) Upgrade(w http.ResponseWriter, r *http.Request, h Handler) (*Conn, error) {
	if t.closed.Load() {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return nil, ErrTransportClosed
	}
	if r.TLS != nil || !canHijack(w) {
		http.Error(w, "websocket: this connection cannot be served by the epoll transport", http.StatusInternalServerError)
		return nil, errNotHijackable
	}
	nc, rw, _, err := upgrader.Upgrade(r, w)
	if err != nil {
		if nc != nil {
			nc.Close()
		}
		return nil, err
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		nc.Close()
		return nil, errNotHijackable
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		nc.Close()
		return nil, err
	}
	// Our own descriptor for the socket: closing nc then unregisters it
	// from the runtime's poller (so readiness is reported to ours only)
	// and leaves nothing for a finalizer to close.
	fd := -1
	var dupErr error
	if err := raw.Control(func(s uintptr) {
		fd, dupErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil || dupErr != nil {
		nc.Close()
		return nil, errors.Join(err, dupErr)
	}
	var early []byte
	if n := rw.Reader.Buffered(); n > 0 {
		b, _ := rw.Reader.Peek(n)
		early = append([]byte(nil), b...)
	}
	nc.Close()
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	id := t.next.Add(1)
	c := &Conn{p: t.pollers[id%uint64(len(t.pollers))], id: id, fd: fd, h: h, in: early}
	c.lastRead.Store(time.Now().UnixNano())
	return c, nil
}

func canHijack(w http.ResponseWriter) bool {
	type unwrapper interface{ Unwrap() http.ResponseWriter }
	for {
		if _, ok := w.(http.Hijacker); ok {
			return true
		}
		u, ok := w.(unwrapper)
		if !ok {
			return false
		}
		w = u.Unwrap()
	}
}

// Start hands the connection to its poller. Bytes the client sent along
// with the upgrade request are decoded first.
func (c *Conn) Start() error {
	early := len(c.in) > 0 // read before the poller owns c.in
	c.p.t.count.Add(1)
	if err := c.p.add(c); err != nil {
		c.p.t.count.Add(-1)
		c.mu.Lock()
		c.state = stateClosed
		c.mu.Unlock()
		unix.Close(c.fd)
		return err
	}
	if early {
		c.p.kick(c)
	}
	return nil
}

// Discard closes a connection that was upgraded but never started.
func (c *Conn) Discard() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateClosed {
		c.state = stateClosed
		unix.Close(c.fd)
	}
}

// Close closes every connection (their handlers' OnClose run with
// ErrTransportClosed) and stops the pollers.
func (t *Transport) Close() error {
	t.once.Do(func() {
		t.closed.Store(true)
		for _, p := range t.pollers {
			p.shutdown()
		}
		t.wg.Wait()
		t.closeBatches()
	})
	return nil
}
