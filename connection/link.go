package connection

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/backchannel/backchannel/groups"
	"github.com/backchannel/backchannel/internal/control"
)

// link is one control link. Its state is kept small: the reading goroutine
// is the HTTP handler's own, and a writer goroutine exists only while the
// send queue is non-empty.
type link struct {
	srv *Server
	ws  wsConn

	sid string // set at hello; immutable afterwards
	uid string

	lastRead atomic.Int64 // unix ns of the last frame read, for keepalive

	// Token bucket, touched only by the reading goroutine.
	tokens   float64
	tokensAt int64

	mu       sync.Mutex
	queue    [][]byte
	flushing bool
	closing  bool
	seq      uint64
	code     int    // close code, when the server closed the link
	reason   string // metrics reason, when the server closed the link
}

// allow takes one token from the link's bucket.
func (l *link) allow(now int64) bool {
	cfg := &l.srv.cfg
	if l.tokensAt == 0 {
		l.tokens = float64(cfg.RateBurst)
	} else {
		l.tokens += float64(now-l.tokensAt) / 1e9 * cfg.RateLimit
		if l.tokens > float64(cfg.RateBurst) {
			l.tokens = float64(cfg.RateBurst)
		}
	}
	l.tokensAt = now
	if l.tokens < 1 {
		return false
	}
	l.tokens--
	return true
}

// sendOne queues a message for this link alone, stamped with the next seq.
func (l *link) sendOne(msg []byte, critical bool) bool {
	l.mu.Lock()
	l.seq++
	seq := l.seq
	l.mu.Unlock()
	return l.enqueue(control.WithSeq(msg, seq), critical)
}

// enqueue queues bytes for writing. Non-critical messages are dropped when
// the queue is past its soft limit; critical ones are never dropped, and a
// queue past its hard limit means the client cannot keep up: enqueue then
// reports false and the caller closes the link.
func (l *link) enqueue(msg []byte, critical bool) bool {
	cfg := &l.srv.cfg
	l.mu.Lock()
	if l.closing {
		l.mu.Unlock()
		return true
	}
	n := len(l.queue)
	if n >= cfg.QueueHard {
		l.mu.Unlock()
		return false
	}
	if n >= cfg.QueueSoft && !critical {
		l.mu.Unlock()
		l.srv.metrics.dropped.Inc()
		return true
	}
	l.queue = append(l.queue, msg)
	start := !l.flushing
	l.flushing = true
	l.mu.Unlock()
	if start {
		l.srv.flushers.Add(1)
		go l.flush()
	}
	return true
}

// flush writes queued messages and exits as soon as the queue is empty.
func (l *link) flush() {
	defer l.srv.flushers.Done()
	var batch [][]byte
	for {
		l.mu.Lock()
		if len(l.queue) == 0 || l.closing {
			l.flushing = false
			l.queue = nil
			l.mu.Unlock()
			return
		}
		batch, l.queue = l.queue, batch[:0]
		l.mu.Unlock()
		for i, msg := range batch {
			ctx, cancel := context.WithTimeout(l.srv.ctx, l.srv.cfg.WriteTimeout)
			err := l.ws.Write(ctx, msg)
			cancel()
			batch[i] = nil
			if err != nil {
				l.mu.Lock()
				l.flushing = false
				l.queue = nil
				l.mu.Unlock()
				l.abort(control.CloseSlowConsumer, "write_failed")
				return
			}
			l.srv.metrics.messagesOut.Inc()
		}
	}
}

// close starts the close handshake from outside the reading goroutine; that
// goroutine sees its Read fail and cleans up. Only the first call counts.
func (l *link) close(code int, text, reason string) {
	if !l.markClosing(code, reason) {
		return
	}
	l.srv.metrics.closes.WithLabelValues(reason).Inc()
	go func() { _ = l.ws.Close(code, text) }()
}

// abort drops a link whose peer is unresponsive: a close handshake would
// only wait for it.
func (l *link) abort(code int, reason string) {
	if !l.markClosing(code, reason) {
		return
	}
	l.srv.metrics.closes.WithLabelValues(reason).Inc()
	_ = l.ws.CloseNow()
}

// markClosing records why the server is closing the link and reports
// whether this call was the first.
func (l *link) markClosing(code int, reason string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closing {
		return false
	}
	l.closing = true
	l.code, l.reason = code, reason
	l.queue = nil
	return true
}

// fail closes the link from its reading goroutine, which then returns.
func (l *link) fail(code int, text, reason string) {
	if l.markClosing(code, reason) {
		l.srv.metrics.closes.WithLabelValues(reason).Inc()
		_ = l.ws.Close(code, text)
	}
}

// serve reads frames until the link ends. It runs on the HTTP handler's
// goroutine.
func (l *link) serve(facts *groups.Facts) {
	s := l.srv
	helloTimer := time.AfterFunc(s.cfg.HelloTimeout, func() {
		l.close(control.CloseHelloTimeout, "hello timeout", "hello_timeout")
	})
	defer helloTimer.Stop()
	var readErr error
	for {
		binary, data, err := l.ws.Read(s.ctx)
		if err != nil {
			readErr = err
			break
		}
		now := time.Now().UnixNano()
		l.lastRead.Store(now)
		if binary {
			l.fail(control.CloseUnsupportedData, "binary frames are not accepted", "binary")
			break
		}
		if !l.allow(now) {
			l.fail(control.CloseRateLimited, "rate limit exceeded", "rate_limited")
			break
		}
		msg, err := control.DecodeClient(data)
		if err != nil {
			code := control.CloseCodeFor(err)
			text, reason := "malformed message", "malformed"
			if code == control.CloseUnknownType {
				text, reason = "unknown message type", "unknown_type"
			}
			s.log.Debug("closing link on a bad frame", "sid", l.sid, "err", err)
			l.fail(code, text, reason)
			break
		}
		if l.sid == "" {
			if msg.Hello == nil {
				l.fail(control.CloseProtocolError, "hello expected first", "protocol")
				break
			}
			if !helloTimer.Stop() {
				break // the hello timeout fired meanwhile
			}
			facts.Hello = data
			if !s.hello(l, msg.Hello, facts) {
				break
			}
			facts = nil
			continue
		}
		if msg.Hello != nil {
			l.fail(control.CloseProtocolError, "hello sent twice", "protocol")
			break
		}
		s.metrics.messagesIn.WithLabelValues(msg.Type).Inc()
		s.up.add(groups.ClientMessage(s.cfg.ID, l.sid, l.uid, msg.Type, data))
	}
	if readErr != nil && errorIsTooBig(readErr) {
		if l.markClosing(control.CloseTooBig, "too_big") {
			s.metrics.closes.WithLabelValues("too_big").Inc()
		}
	}
	_ = l.ws.CloseNow()
	s.unregister(l, peerCloseCode(readErr))
}

func errorIsTooBig(err error) bool { return err == errFrameTooBig }
