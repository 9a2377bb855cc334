//go:build linux

package wsepoll

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

var validUTF8 = utf8.Valid

// Handler receives a connection's events, on a poller goroutine: keep the
// work short and never block. A Handler may call any Conn method.
type Handler interface {
	// OnMessage is called for each complete text or binary message. data
	// is only valid during the call.
	OnMessage(c *Conn, binary bool, data []byte)
	// OnClose is called once, after the socket is closed.
	OnClose(c *Conn, info CloseInfo)
}

// CloseInfo tells how a connection ended.
type CloseInfo struct {
	PeerCode   int    // close code the peer sent; 1005 for a close frame without one; 0 if it sent none
	PeerReason string // reason the peer sent
	Code       int    // close code this side sent, 0 if none
	Err        error  // why the socket was closed early: a *CloseError, ErrWriteTimeout, ErrCloseTimeout, ErrAborted, ErrTransportClosed, or a socket error; nil after a clean handshake
}

// Reasons a connection ends without a clean close handshake.
var (
	ErrWriteTimeout    = errors.New("wsepoll: the peer did not read for WriteTimeout")
	ErrCloseTimeout    = errors.New("wsepoll: no close frame from the peer within CloseTimeout")
	ErrAborted         = errors.New("wsepoll: aborted")
	ErrTransportClosed = errors.New("wsepoll: transport closed")
	ErrPeerGone        = errors.New("wsepoll: connection lost")
)

// SendResult says what Send did with a frame.
type SendResult uint8

const (
	Sent     SendResult = iota // written to the socket in full
	Queued                     // kept in the backlog; EPOLLOUT will write it
	Replaced                   // replaced a queued frame with the same key
	Dropped                    // not critical and the backlog is past QueueSoft
	Overflow                   // the backlog is past QueueHard: the caller should close the connection
	Closed                     // the connection is closing or closed
)

type outFrame struct {
	b        []byte
	key      string
	critical bool
}

type connState uint8

const (
	stateOpen      connState = iota
	stateCloseSent           // we sent close and wait for the peer's
	stateFinishing           // the poller must close the socket
	stateClosed
)

// Conn is one server-side WebSocket connection. Its methods are safe for
// concurrent use.
type Conn struct {
	p  *poller
	id uint64
	fd int
	h  Handler

	lastRead atomic.Int64 // unix ns of the last frame from the peer

	// Touched by the poller goroutine only.
	in        []byte // start of a frame not yet complete
	msg       []byte // fragments of a message being assembled
	msgOp     byte
	armed     bool // EPOLLOUT requested
	discarded int  // bytes thrown away after a protocol violation
	peer      int  // peer's close code
	peerRs    string

	mu         sync.Mutex
	state      connState
	deferred   []byte     // frames that may wait (Defer), written with the next write or at the poller's deadline
	deferDue   int64      // unix ns: that deadline, for the frames in deferred now
	partial    []byte     // rest of the frame being written
	ctrl       [][]byte   // control frames waiting behind partial
	queue      []outFrame // data frames not started
	stallSince int64      // unix ns of the last progress while the backlog was not empty
	closeBy    int64      // unix ns: CloseTimeout of a close we sent
	finishWith error
	failErr    error // a protocol violation by the peer, reported at the end
	code       int   // close code we sent
	finishOnce bool  // finish ran; written by the poller only, so it reads it without mu
	inRing     bool  // partial is a write queued in a Batch
	// The poller finished the connection while a Batch write was queued:
	// the batch closes the descriptor, so that its number cannot be
	// reused under the queued write.
	closeAfterRing bool
}

// ID is unique among the transport's connections.
func (c *Conn) ID() uint64 { return c.id }

// LastRead returns when the last frame (of any kind) arrived, unix ns.
func (c *Conn) LastRead() int64 { return c.lastRead.Load() }

// Send writes one complete frame (from Frame) or queues it behind what is
// already waiting. A non-empty key marks latest-state content: it replaces
// a queued frame with the same key instead of waiting behind it. Critical
// frames are never dropped, only refused with Overflow past QueueHard.
// The slice is kept until written and must not be modified.
func (c *Conn) Send(frame []byte, key string, critical bool) SendResult {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sendLocked(frame, key, critical, nil)
}

// sendLocked is Send; a write due now goes into b when b is not nil.
func (c *Conn) sendLocked(frame []byte, key string, critical bool, b *Batch) SendResult {
	if c.state != stateOpen {
		return Closed
	}
	if c.partial == nil && len(c.ctrl) == 0 && len(c.queue) == 0 {
		if len(c.deferred) > 0 {
			// What was deferred rides along: one write for both.
			frame = append(c.deferred, frame...)
			c.deferred = nil
		}
		return c.startLocked(frame, b)
	}
	if key != "" {
		for i := range c.queue {
			if c.queue[i].key == key {
				c.queue[i] = outFrame{frame, key, critical || c.queue[i].critical}
				return Replaced
			}
		}
	}
	cfg := &c.p.t.cfg
	if len(c.queue) >= cfg.QueueHard {
		return Overflow
	}
	if len(c.queue) >= cfg.QueueSoft && !critical {
		return Dropped
	}
	c.queue = append(c.queue, outFrame{frame, key, critical})
	return Queued
}

// startLocked writes f on the idle socket now, or queues the write in b.
func (c *Conn) startLocked(f []byte, b *Batch) SendResult {
	if b.usable() {
		return b.add(c, f)
	}
	return c.writeLocked(f)
}

// Defer sends a critical frame that may wait up to Config.DeferDelay: it
// is written together with the next frame sent to the connection, or on
// its own when the delay is up, so that small replies (acknowledgements)
// do not each cost a write. frame is copied.
func (c *Conn) Defer(frame []byte) SendResult {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateOpen {
		return Closed
	}
	if c.partial != nil || len(c.ctrl) > 0 || len(c.queue) > 0 {
		if len(c.queue) >= c.p.t.cfg.QueueHard {
			return Overflow
		}
		c.queue = append(c.queue, outFrame{b: append([]byte(nil), frame...), critical: true})
		return Queued
	}
	first := len(c.deferred) == 0
	if c.deferred == nil {
		// Room for a few acks: growing from one frame's size copied the
		// buffer once or twice per write it waited for.
		c.deferred = make([]byte, 0, max(deferredRoom, len(frame)))
	}
	c.deferred = append(c.deferred, frame...)
	if len(c.deferred) >= maxDeferred {
		b := c.deferred
		c.deferred = nil
		return c.writeLocked(b)
	}
	if first {
		c.deferDue = time.Now().UnixNano() + int64(c.p.t.cfg.DeferDelay)
		c.p.deferUntil(c, c.deferDue)
	}
	return Queued
}

// deferredRoom is what a link's deferred frames get when the first one
// comes: a vote's ack is ~40 bytes.
const deferredRoom = 192

// maxDeferred is how many deferred bytes make a write worth doing at once.
const maxDeferred = 16 << 10

// flushDeferred writes what was deferred, for the poller when a deadline
// is up at now; b, when not nil, carries the write. The deadline may be
// that of frames which have since left with another write: the frames
// deferred after them wait for their own.
func (c *Conn) flushDeferred(b *Batch, now int64) {
	b.makeRoom()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.deferred) == 0 || c.state != stateOpen || c.deferDue > now {
		return
	}
	f := c.deferred
	c.deferred = nil
	if c.partial == nil && len(c.ctrl) == 0 && len(c.queue) == 0 {
		c.startLocked(f, b)
		return
	}
	c.queue = append(c.queue, outFrame{b: f, critical: true})
}

// Backlog returns the number of data frames waiting, the one being written
// included.
func (c *Conn) Backlog() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(c.queue)
	if c.partial != nil {
		n++
	}
	return n
}

// Ping sends a ping frame.
func (c *Conn) Ping() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == stateOpen {
		c.sendControlLocked(pingFrame)
	}
}

// Close starts the close handshake: queued data frames are dropped, a
// close frame is sent, and the socket is closed when the peer answers or
// after CloseTimeout. Only the first Close or Abort counts.
func (c *Conn) Close(code int, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateOpen {
		return
	}
	c.state = stateCloseSent
	c.code = code
	c.queue, c.deferred = nil, nil
	c.closeBy = time.Now().Add(c.p.t.cfg.CloseTimeout).UnixNano()
	c.sendControlLocked(closeFrame(code, reason))
	if c.state == stateCloseSent {
		c.p.watch(c)
	}
}

// Abort closes the socket without a handshake.
func (c *Conn) Abort() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.finishLocked(ErrAborted)
}

// finishLocked asks the poller to close the socket; only it closes fds, so
// that a read in progress never meets a reused descriptor.
func (c *Conn) finishLocked(err error) {
	if c.state >= stateFinishing {
		return
	}
	c.state = stateFinishing
	c.finishWith = err
	c.queue, c.ctrl, c.partial, c.deferred = nil, nil, nil, nil
	c.p.kick(c)
}

func (c *Conn) sendControlLocked(f []byte) {
	if c.partial == nil && len(c.ctrl) == 0 && len(c.queue) == 0 {
		c.writeLocked(f)
		return
	}
	c.ctrl = append(c.ctrl, f)
}

// writeLocked writes f on an idle socket, keeping what the kernel did not
// take.
func (c *Conn) writeLocked(f []byte) SendResult {
	n, err := RawWrite(c.fd, f)
	if err != nil {
		c.finishLocked(ErrPeerGone)
		return Closed
	}
	if n == len(f) {
		c.afterDrainLocked()
		return Sent
	}
	c.partial = f[n:]
	c.stallSince = time.Now().UnixNano()
	c.p.arm(c, true)
	c.p.watch(c)
	return Queued
}

// flushLocked writes the backlog until the socket would block.
func (c *Conn) flushLocked() {
	if c.state >= stateFinishing {
		return
	}
	for {
		if c.partial == nil {
			switch {
			case len(c.ctrl) > 0:
				c.partial = c.ctrl[0]
				c.ctrl[0] = nil
				c.ctrl = c.ctrl[1:]
			case len(c.queue) > 0:
				c.partial = c.queue[0].b
				c.queue[0] = outFrame{}
				c.queue = c.queue[1:]
			default:
				c.ctrl, c.queue = nil, nil
				c.stallSince = 0
				c.p.arm(c, false)
				c.afterDrainLocked()
				return
			}
		}
		n, err := RawWrite(c.fd, c.partial)
		if err != nil {
			c.finishLocked(ErrPeerGone)
			return
		}
		if n > 0 {
			c.stallSince = time.Now().UnixNano()
		}
		if n < len(c.partial) {
			c.partial = c.partial[n:]
			c.p.arm(c, true)
			return
		}
		c.partial = nil
	}
}

// afterDrainLocked finishes a connection whose close frame went out after
// the peer's close frame arrived.
func (c *Conn) afterDrainLocked() {
	if c.state == stateCloseSent && c.peer != 0 {
		c.finishLocked(nil)
	}
}

// RawWrite is a non-blocking write on a non-blocking socket: (0, nil) when
// the socket would block. The socket never blocks, so the call is made without telling the
// scheduler (a raw system call): for the fan-out, which makes one write per
// link back to back, that saves the bookkeeping and the processor hand-offs
// a blocking system call would cost.
func RawWrite(fd int, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	for {
		n, _, errno := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		switch errno {
		case 0:
			return int(n), nil
		case unix.EAGAIN:
			return 0, nil
		case unix.EINTR:
			continue
		}
		return 0, errno
	}
}

// RawRead is the non-blocking read counterpart of RawWrite: (0, EAGAIN)
// when nothing is there, (0, nil) at the end of the stream.
func RawRead(fd int, b []byte) (int, error) {
	for {
		n, _, errno := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		switch errno {
		case 0:
			return int(n), nil
		case unix.EINTR:
			continue
		}
		return 0, errno
	}
}

// consume decodes frames from data just read (on the poller goroutine) and
// reports whether the connection is still worth reading.
func (c *Conn) consume(data []byte, now int64) bool {
	if c.discarding() {
		// A peer that broke the protocol gets CloseTimeout to read our
		// close frame, but not an unbounded stream of bytes to throw away.
		c.in = nil
		c.discarded += len(data)
		if c.discarded > maxDiscard {
			c.mu.Lock()
			c.finishLocked(c.failErr)
			c.mu.Unlock()
			return false
		}
		return true
	}
	max := c.p.t.cfg.MaxMessage
	b := data
	if len(c.in) > 0 {
		c.in = append(c.in, data...)
		b = c.in
	}
	for {
		h, hn, err := parseHeader(b, max)
		if err != nil {
			c.fail(err)
			return false
		}
		if hn == 0 || len(b) < hn+h.length {
			break
		}
		payload := b[hn : hn+h.length]
		ws.Cipher(payload, h.mask, 0)
		b = b[hn+h.length:]
		c.lastRead.Store(now)
		if !c.frame(h, payload) {
			return false
		}
	}
	switch {
	case len(b) == 0:
		c.in = nil
	case len(c.in) > 0:
		// b is the tail of c.in: move it to the front.
		c.in = c.in[:copy(c.in, b)]
	default:
		need := len(b) + 16
		if h, hn, _ := parseHeader(b, max); hn > 0 {
			need = hn + h.length
		}
		c.in = append(make([]byte, 0, need), b...)
	}
	return true
}

// frame handles one unmasked frame and reports whether to keep reading.
func (c *Conn) frame(h header, payload []byte) bool {
	c.mu.Lock()
	st := c.state
	c.mu.Unlock()
	if st >= stateFinishing {
		return false
	}
	switch h.op {
	case opText, opBinary:
		if c.msgOp != 0 {
			c.fail(protocolError("new message before the previous one's last fragment"))
			return false
		}
		if !h.fin {
			c.msgOp = h.op
			c.msg = append([]byte(nil), payload...)
			return true
		}
		return c.deliver(h.op, payload)
	case opContinuation:
		if c.msgOp == 0 {
			c.fail(protocolError("continuation frame without a message"))
			return false
		}
		if len(c.msg)+len(payload) > c.p.t.cfg.MaxMessage {
			c.fail(ErrTooBig)
			return false
		}
		c.msg = append(c.msg, payload...)
		if !h.fin {
			return true
		}
		op, msg := c.msgOp, c.msg
		c.msgOp, c.msg = 0, nil
		return c.deliver(op, msg)
	case opPing:
		c.mu.Lock()
		if c.state == stateOpen {
			c.sendControlLocked(frame(opPong, payload))
		}
		c.mu.Unlock()
		return true
	case opPong:
		return true
	case opClose:
		code, reason, err := parseClose(payload)
		if err != nil {
			c.fail(err)
			return false
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		c.peer, c.peerRs = code, reason
		switch c.state {
		case stateOpen:
			// Echo the code, then close once the echo is written.
			c.state = stateCloseSent
			c.queue, c.deferred = nil, nil
			echo := code
			if echo == 1005 {
				echo = 0
			}
			c.code = echo
			c.closeBy = time.Now().Add(c.p.t.cfg.CloseTimeout).UnixNano()
			c.sendControlLocked(closeFrame(echo, ""))
			if c.state == stateCloseSent {
				c.p.watch(c)
			}
		case stateCloseSent:
			if c.partial == nil && len(c.ctrl) == 0 {
				c.finishLocked(nil)
			}
		}
		return false
	}
	return true
}

func (c *Conn) deliver(op byte, data []byte) bool {
	c.mu.Lock()
	open := c.state == stateOpen
	c.mu.Unlock()
	if !open {
		return true // draining until the peer's close frame
	}
	if op == opText && !validUTF8(data) {
		c.fail(ErrInvalidUTF8)
		return false
	}
	c.h.OnMessage(c, op == opBinary, data)
	return true
}

// fail answers a protocol violation with its close code. The socket is
// not closed at once: what the peer is still sending is read and thrown
// away until it closes or CloseTimeout passes, so that it gets to read our
// close frame instead of a connection reset.
func (c *Conn) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ce *CloseError
	if c.state != stateOpen || !errors.As(err, &ce) {
		c.finishLocked(err)
		return
	}
	c.failErr = err
	c.code = ce.Code
	c.queue, c.deferred = nil, nil
	c.msg, c.msgOp = nil, 0
	c.state = stateCloseSent
	c.closeBy = time.Now().Add(c.p.t.cfg.CloseTimeout).UnixNano()
	c.sendControlLocked(closeFrame(ce.Code, ce.Msg))
	if c.state == stateCloseSent {
		c.p.watch(c)
	}
}

// maxDiscard is how much a peer that broke the protocol may still send.
const maxDiscard = 256 << 10

// discarding reports whether the peer broke the protocol and its bytes
// are only drained.
func (c *Conn) discarding() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.failErr != nil
}
