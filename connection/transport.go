package connection

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/backchannel/backchannel/internal/wsepoll"
)

// Transport names for Config.Transport.
const (
	TransportEpoll = "epoll" // internal/wsepoll: no goroutine per idle link (default)
	TransportCoder = "coder" // coder/websocket: a reading goroutine per link; also serves TLS listeners
)

// wsConn is the seam between a link and its WebSocket transport. A link
// receives its events through the wsepoll.Handler methods it implements,
// whichever transport drives it. Every method may be called from any
// goroutine.
type wsConn interface {
	// Send writes one complete frame (wsepoll.Frame) or queues it; see
	// wsepoll.Conn.Send for key and critical.
	Send(frame []byte, key string, critical bool) wsepoll.SendResult
	// Defer sends a critical frame that may wait a little to share a write
	// with the next one (wsepoll.Conn.Defer); frame is copied.
	Defer(frame []byte) wsepoll.SendResult
	Ping()
	// Close starts the close handshake without waiting for it.
	Close(code int, reason string)
	// Abort drops the connection without a handshake.
	Abort()
	// LastRead is when the peer last sent anything (pongs included), unix ns.
	LastRead() int64
}

// framePayload returns the payload of an unmasked server frame built by
// wsepoll.Frame.
func framePayload(f []byte) []byte {
	switch f[1] & 0x7f {
	case 126:
		return f[4:]
	case 127:
		return f[10:]
	}
	return f[2:]
}

// coderConn drives a link with coder/websocket: the HTTP handler's
// goroutine reads, and a writer goroutine runs while the queue is not
// empty. It costs more memory per link than wsepoll (coder keeps the
// HTTP server's 4 KB read and write buffers) but works on any listener.
type coderConn struct {
	c       *websocket.Conn
	h       wsepoll.Handler
	ctx     context.Context
	cfg     *Config
	wg      *sync.WaitGroup
	last    atomic.Int64
	mu      sync.Mutex
	queue   []queued
	writing bool
	closed  bool
	code    int
	err     error
}

type queued struct {
	frame    []byte
	key      string
	critical bool
}

func acceptCoder(w http.ResponseWriter, r *http.Request, s *Server, h wsepoll.Handler) (*coderConn, error) {
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		// The origin was checked by the caller against its allow-list.
		InsecureSkipVerify: true,
		CompressionMode:    websocket.CompressionDisabled,
	})
	if err != nil {
		return nil, err
	}
	c.SetReadLimit(int64(s.cfg.MaxMessage))
	cc := &coderConn{c: c, h: h, ctx: s.ctx, cfg: &s.cfg, wg: &s.writers}
	cc.last.Store(time.Now().UnixNano())
	return cc, nil
}

// serve reads until the connection ends, then reports the close.
func (c *coderConn) serve() {
	var info wsepoll.CloseInfo
	for {
		typ, data, err := c.c.Read(c.ctx)
		if err != nil {
			switch {
			case errors.Is(err, websocket.ErrMessageTooBig):
				info.Err = wsepoll.ErrTooBig
				info.Code = wsepoll.CodeTooBig
			case websocket.CloseStatus(err) >= 0:
				info.PeerCode = int(websocket.CloseStatus(err))
			default:
				info.Err = wsepoll.ErrPeerGone
			}
			break
		}
		c.last.Store(time.Now().UnixNano())
		c.h.OnMessage(nil, typ == websocket.MessageBinary, data)
	}
	_ = c.c.CloseNow()
	c.mu.Lock()
	c.closed = true
	c.queue = nil
	if c.code != 0 {
		info.Code = c.code
	}
	if c.err != nil {
		info.Err = c.err
	}
	c.mu.Unlock()
	c.h.OnClose(nil, info)
}

func (c *coderConn) LastRead() int64 { return c.last.Load() }

func (c *coderConn) Send(frame []byte, key string, critical bool) wsepoll.SendResult {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return wsepoll.Closed
	}
	if key != "" {
		for i := range c.queue {
			if c.queue[i].key == key {
				c.queue[i] = queued{frame, key, critical || c.queue[i].critical}
				return wsepoll.Replaced
			}
		}
	}
	if len(c.queue) >= c.cfg.QueueHard {
		return wsepoll.Overflow
	}
	if len(c.queue) >= c.cfg.QueueSoft && !critical {
		return wsepoll.Dropped
	}
	c.queue = append(c.queue, queued{frame, key, critical})
	if !c.writing {
		c.writing = true
		c.wg.Add(1)
		go c.flush()
	}
	return wsepoll.Queued
}

// Defer sends at once: the writer goroutine batches nothing anyway.
func (c *coderConn) Defer(frame []byte) wsepoll.SendResult {
	return c.Send(append([]byte(nil), frame...), "", true)
}

func (c *coderConn) flush() {
	defer c.wg.Done()
	for {
		c.mu.Lock()
		if len(c.queue) == 0 || c.closed {
			c.writing = false
			c.mu.Unlock()
			return
		}
		q := c.queue[0]
		c.queue[0] = queued{}
		c.queue = c.queue[1:]
		c.mu.Unlock()
		ctx, cancel := context.WithTimeout(c.ctx, c.cfg.WriteTimeout)
		err := c.c.Write(ctx, websocket.MessageText, framePayload(q.frame))
		cancel()
		if err != nil {
			c.mu.Lock()
			c.writing = false
			if c.err == nil {
				c.err = wsepoll.ErrWriteTimeout
			}
			c.mu.Unlock()
			c.Abort()
			return
		}
	}
}

func (c *coderConn) Ping() {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		ctx, cancel := context.WithTimeout(c.ctx, c.cfg.PingInterval)
		defer cancel()
		if c.c.Ping(ctx) == nil {
			c.last.Store(time.Now().UnixNano())
		}
	}()
}

func (c *coderConn) Close(code int, reason string) {
	c.mu.Lock()
	if c.closed || c.code != 0 {
		c.mu.Unlock()
		return
	}
	c.code = code
	c.queue = nil
	c.mu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		// Do not wait coder's own 5 s for a peer that does not read.
		t := time.AfterFunc(closeTimeout, func() { _ = c.c.CloseNow() })
		defer t.Stop()
		_ = c.c.Close(websocket.StatusCode(code), reason)
	}()
}

// closeTimeout bounds a close handshake, as wsepoll's default does.
const closeTimeout = 2 * time.Second

func (c *coderConn) Abort() { _ = c.c.CloseNow() }
