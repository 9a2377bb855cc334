package connection

import (
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/backchannel/backchannel/groups"
	"github.com/backchannel/backchannel/internal/control"
	"github.com/backchannel/backchannel/internal/wsepoll"
)

// link is one control link. No goroutine belongs to it: its transport
// calls OnMessage and OnClose, the fan-out writes to it directly, and the
// server's timing wheel checks its deadlines. So it is kept small.
type link struct {
	srv *Server
	ws  wsConn

	openedAt int64         // unix ns
	pending  *groups.Facts // request facts until hello

	// Token bucket, touched only by the transport's event goroutine.
	tokens   float64
	tokensAt int64

	wheelAt int64 // slot the wheel will check this link in; wheel.mu

	seq atomic.Uint64 // of messages to this link alone
	// spread delays this link's keepalive by up to half an interval, so
	// that links which connected together (a reconnect storm, a drain) are
	// not pinged together forever after.
	spread int64

	mu       sync.Mutex
	sid      string // set at hello
	uid      string
	streams  []string // from a viewer JWT; nil = any
	facts    []byte   // JSON groups.Facts, to re-announce the link after a bus reset
	pingSent int64    // unix ns of an unanswered keepalive ping
	closing  bool
	gone     bool
	code     int    // close code, when the server closed the link
	reason   string // metrics reason, when the server closed the link
}

func (l *link) ident() (sid, uid string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sid, l.uid
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

// sendOne sends a message to this link alone, stamped with the next seq.
func (l *link) sendOne(msg []byte, critical bool) {
	l.deliver(newFrame(control.WithSeq(msg, l.seq.Add(1))), "", critical)
}

// appendSeqFrame appends to b the frame of msg (a JSON object) with the
// link's next seq, as sendOne would send it, without building msg again.
func (l *link) appendSeqFrame(b, msg []byte) []byte {
	seq := l.seq.Add(1)
	n := len(msg)
	if n < 2 || msg[n-1] != '}' {
		return wsepoll.AppendFrame(b, msg)
	}
	var digits [20]byte
	d := strconv.AppendUint(digits[:0], seq, 10)
	size := n - 1 + len(`,"seq":`) + len(d) + 1
	if n == 2 {
		size-- // {} takes no comma
	}
	b = wsepoll.AppendFrameHeader(b, size)
	b = append(b, msg[:n-1]...)
	if n > 2 {
		b = append(b, ',')
	}
	b = append(b, `"seq":`...)
	b = append(b, d...)
	return append(b, '}')
}

// deferOne is sendOne for a critical frame that may wait to share a write
// (an ack); scratch is reused by the caller and returned grown.
func (l *link) deferOne(scratch, msg []byte) []byte {
	scratch = l.appendSeqFrame(scratch[:0], msg)
	if l.ws.Defer(scratch) == wsepoll.Overflow {
		l.close(control.CloseSlowConsumer, "send queue overflow", "slow_consumer")
	}
	return scratch
}

func newFrame(payload []byte) []byte { return wsepoll.Frame(payload) }

// deliver hands a frame to the transport and applies the slow-consumer
// policy to the outcome. It reports whether the frame was accepted.
func (l *link) deliver(frame []byte, key string, critical bool) bool {
	return l.deliverVia(nil, frame, key, critical)
}

// deliverVia is deliver with the write, on the epoll transport, gathered
// into b (a fan-out's one system call for many links).
func (l *link) deliverVia(b *wsepoll.Batch, frame []byte, key string, critical bool) bool {
	var r wsepoll.SendResult
	if c, ok := l.ws.(*wsepoll.Conn); ok && b != nil {
		r = b.Send(c, frame, key, critical)
	} else {
		r = l.ws.Send(frame, key, critical)
	}
	switch r {
	case wsepoll.Sent, wsepoll.Queued:
		return true
	case wsepoll.Replaced, wsepoll.Dropped:
		l.srv.metrics.dropped.Inc()
		return true
	case wsepoll.Overflow:
		l.close(control.CloseSlowConsumer, "send queue overflow", "slow_consumer")
	}
	return false
}

// close starts the close handshake; only the first close or abort counts.
func (l *link) close(code int, text, reason string) {
	if l.markClosing(code, reason) {
		l.srv.metrics.closes.WithLabelValues(reason).Inc()
		l.ws.Close(code, text)
	}
}

// abort drops a link whose peer is unresponsive: a close handshake would
// only wait for it.
func (l *link) abort(code int, reason string) {
	if l.markClosing(code, reason) {
		l.srv.metrics.closes.WithLabelValues(reason).Inc()
		l.ws.Abort()
	}
}

// markClosing records why the server is closing the link and reports
// whether this call was the first.
func (l *link) markClosing(code int, reason string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closing || l.gone {
		return false
	}
	l.closing = true
	l.code, l.reason = code, reason
	return true
}

// OnMessage handles one client frame (wsepoll.Handler).
func (l *link) OnMessage(_ *wsepoll.Conn, binary bool, data []byte) {
	s := l.srv
	l.mu.Lock()
	closing, sid, uid := l.closing, l.sid, l.uid
	l.mu.Unlock()
	if closing {
		return
	}
	now := time.Now().UnixNano()
	if binary {
		l.close(control.CloseUnsupportedData, "binary frames are not accepted", "binary")
		return
	}
	if !l.allow(now) {
		l.close(control.CloseRateLimited, "rate limit exceeded", "rate_limited")
		return
	}
	if sid != "" {
		// Votes are the hot path: read in place, relayed typed.
		if v, ok := control.ParseVote(data); ok {
			s.metrics.in(control.TypeVote)
			s.up.addVote(l, sid, v.Poll, v.Choice, v.ID)
			return
		}
	}
	msg, err := control.DecodeClient(data)
	if err != nil {
		code := control.CloseCodeFor(err)
		text, reason := "malformed message", "malformed"
		if code == control.CloseUnknownType {
			text, reason = "unknown message type", "unknown_type"
		}
		s.log.Debug("closing link on a bad frame", "sid", sid, "err", err)
		l.close(code, text, reason)
		return
	}
	if sid == "" {
		if msg.Hello == nil {
			l.close(control.CloseProtocolError, "hello expected first", "protocol")
			return
		}
		s.hello(l, msg.Hello, data)
		return
	}
	if msg.Hello != nil {
		l.close(control.CloseProtocolError, "hello sent twice", "protocol")
		return
	}
	s.metrics.in(msg.Type)
	if msg.Resume != nil && s.resume(l, msg.Resume, now) {
		return // recovered: the application has nothing to re-send
	}
	if v := msg.Vote; v != nil {
		s.up.addVote(l, sid, []byte(v.Poll), v.Choice, []byte(v.ID))
		return
	}
	s.up.add(groups.ClientMessage(s.cfg.ID, sid, uid, msg.Type, data))
}

// OnClose forgets the link (wsepoll.Handler).
func (l *link) OnClose(_ *wsepoll.Conn, info wsepoll.CloseInfo) {
	s := l.srv
	l.mu.Lock()
	serverClosed := l.closing
	l.closing, l.gone = true, true
	code, reason := l.code, l.reason
	l.mu.Unlock()
	if !serverClosed {
		code = info.PeerCode
		switch {
		case errors.Is(info.Err, wsepoll.ErrTooBig):
			code, reason = control.CloseTooBig, "too_big"
		case errors.Is(info.Err, wsepoll.ErrInvalidUTF8):
			code, reason = control.CloseInvalidPayload, "malformed"
		case errors.Is(info.Err, wsepoll.ErrProtocol):
			code, reason = info.Code, "ws_protocol"
		case errors.Is(info.Err, wsepoll.ErrWriteTimeout):
			code, reason = control.CloseSlowConsumer, "write_failed"
		case errors.Is(info.Err, wsepoll.ErrTransportClosed):
			code, reason = closeServiceRestart, "shutdown"
		case info.PeerCode != 0:
			reason = "client_closed"
		default:
			reason = "connection_lost"
		}
		s.metrics.closes.WithLabelValues(reason).Inc()
	}
	s.unregister(l, code, reason)
}

// check enforces the link's deadlines when the wheel comes round: the
// hello timeout, then keepalive (ping a link silent for PingInterval, drop
// it if the pong does not come within another).
func (l *link) check(now int64) {
	s := l.srv
	l.mu.Lock()
	if l.closing || l.gone {
		l.mu.Unlock()
		return
	}
	helloed := l.sid != ""
	pingSent := l.pingSent
	l.mu.Unlock()
	if !helloed {
		due := l.openedAt + int64(s.cfg.HelloTimeout)
		if now >= due {
			l.close(control.CloseHelloTimeout, "hello timeout", "hello_timeout")
			return
		}
		s.wheel.schedule(l, due)
		return
	}
	interval := int64(s.cfg.PingInterval)
	last := l.ws.LastRead()
	if pingSent > last {
		if now >= pingSent+interval {
			l.abort(control.CloseGoingAway, "ping_timeout")
			return
		}
		s.wheel.schedule(l, pingSent+interval)
		return
	}
	if due := last + interval + l.spread; now < due {
		s.wheel.schedule(l, due)
		return
	}
	l.mu.Lock()
	l.pingSent = now
	l.mu.Unlock()
	l.ws.Ping()
	s.wheel.schedule(l, now+interval)
}

// announcement is the open message that re-announces the link upward.
func (l *link) announcement(connID string, attrs groups.Attrs) (groups.Mirror, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sid == "" || l.closing || l.gone {
		return groups.Mirror{}, false
	}
	var f groups.Facts
	_ = json.Unmarshal(l.facts, &f)
	return groups.LinkOpened(connID, l.sid, l.uid, l.streams, f, attrs), true
}
