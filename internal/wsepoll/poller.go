//go:build linux

package wsepoll

import (
	"math"
	"sync"
	"time"

	"github.com/backchannel/backchannel/internal/uring"
	"golang.org/x/sys/unix"
)

// poller is one epoll instance and the goroutine that waits on it. Only
// that goroutine reads sockets and closes them.
type poller struct {
	t    *Transport
	epfd int
	evfd int // eventfd: wakes the goroutine for kicks and stop
	buf  []byte
	due  []deferral // scratch of flushDeferred

	// With io_uring (nil without): the ready sockets of a round are read
	// with one system call, into a slot each, and the deferred frames
	// that fall due are written with one.
	ring  *uring.Ring
	slots [][]byte
	ready []*Conn
	done  []uring.Completion
	batch *Batch

	mu      sync.Mutex
	conns   map[uint64]*Conn
	kicked  []*Conn
	closed  bool               // the fds are closed
	watched map[*Conn]struct{} // connections with a deadline: backlog or close handshake
	// Connections with deferred frames, by deadline: all share one delay,
	// so appending keeps the order.
	deferred []deferral
	stop     bool
	// draining: a quiet round found deferred frames and the poller writes
	// them, a bounded number a round without waiting, until none is left
	// (Config.WriteDeferredWhenQuiet); only the poller goroutine uses it.
	draining bool
}

type deferral struct {
	c  *Conn
	at int64 // unix ns
}

const wakeID = 0 // epoll data of the eventfd; connection ids start at 1

// quietAfter is how long a poller must find nothing to read before it
// writes deferred frames early (Config.WriteDeferredWhenQuiet).
const quietAfter = 20 * time.Millisecond

// busyRound is how many ready links end the early writes of a quiet
// poller: the load is back, and deferred frames wait for company again.
const busyRound = 16

func newPoller(t *Transport) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	evfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	setID(&ev, wakeID)
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(evfd)
		return nil, err
	}
	p := &poller{
		t: t, epfd: epfd, evfd: evfd,
		buf:     make([]byte, t.cfg.MaxMessage+maxHeader),
		conns:   make(map[uint64]*Conn),
		watched: make(map[*Conn]struct{}),
	}
	if t.ringOK {
		p.openRings()
	}
	return p, nil
}

// openRings sets up the poller's batched reads and writes; without them it
// makes one system call per socket.
func (p *poller) openRings() {
	r, err := uring.New(batchEntries)
	if err != nil {
		return
	}
	b, err := newBatch(p.t)
	if err != nil {
		r.Close()
		return
	}
	p.ring, p.batch = r, b
	slab := make([]byte, batchEntries*readSlot)
	p.slots = make([][]byte, batchEntries)
	for i := range p.slots {
		p.slots[i] = slab[i*readSlot : (i+1)*readSlot : (i+1)*readSlot]
	}
}

func (p *poller) closeRings() {
	if p.ring != nil {
		p.ring.Close()
		p.ring = nil
	}
	if p.batch != nil && p.batch.ring != nil {
		p.batch.ring.Close()
		p.batch.ring = nil
	}
}

func setID(ev *unix.EpollEvent, id uint64) {
	ev.Fd = int32(uint32(id))
	ev.Pad = int32(uint32(id >> 32))
}

func getID(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

const readEvents = unix.EPOLLIN | unix.EPOLLRDHUP

func (p *poller) add(c *Conn) error {
	p.mu.Lock()
	if p.stop {
		p.mu.Unlock()
		return ErrTransportClosed
	}
	p.conns[c.id] = c
	p.mu.Unlock()
	ev := unix.EpollEvent{Events: readEvents}
	setID(&ev, c.id)
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, c.fd, &ev); err != nil {
		p.mu.Lock()
		delete(p.conns, c.id)
		p.mu.Unlock()
		return err
	}
	return nil
}

// arm turns write-readiness events on or off; callers hold c.mu.
func (p *poller) arm(c *Conn, on bool) {
	if c.armed == on {
		return
	}
	c.armed = on
	ev := unix.EpollEvent{Events: readEvents}
	if on {
		ev.Events |= unix.EPOLLOUT
	}
	setID(&ev, c.id)
	_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, c.fd, &ev)
}

// watch puts c on the list the poller checks for write and close
// deadlines.
func (p *poller) watch(c *Conn) {
	p.mu.Lock()
	first := len(p.watched) == 0
	p.watched[c] = struct{}{}
	if first && !p.closed {
		// It may be blocked without a timeout.
		var one = [8]byte{1}
		_, _ = unix.Write(p.evfd, one[:])
	}
	p.mu.Unlock()
}

// deferUntil has the poller flush c's deferred frames at unix ns at;
// callers hold c.mu.
func (p *poller) deferUntil(c *Conn, at int64) {
	p.mu.Lock()
	first := len(p.deferred) == 0
	p.deferred = append(p.deferred, deferral{c, at})
	if first && !p.closed {
		// It may be waiting without a timeout, or a longer one.
		var one = [8]byte{1}
		_, _ = unix.Write(p.evfd, one[:])
	}
	p.mu.Unlock()
}

// maxDeferredPerRound bounds the deferred writes of one poller round. The
// acknowledgements of a whole commit are deferred together and fall due
// together, thousands at a time on a busy server: written in one go they
// kept the poller from reading its links for up to 220 ms (measured at
// 50,000 votes/s), and the votes waiting in those sockets lagged by as
// much. The rest go out in the next rounds, between reads.
const maxDeferredPerRound = 256

// flushDeferred writes deferred frames whose time has come, at most
// maxDeferredPerRound of them, and returns the next deadline (0: none).
func (p *poller) flushDeferred(now int64) int64 {
	due, next := p.takeDue(p.due[:0], now)
	for _, d := range due {
		d.c.flushDeferred(p.batch, now)
	}
	p.batch.Flush()
	clear(due)
	p.due = due
	return next
}

// writeDeferred writes the deferred frames due after a round that found n
// ready links (waited: epoll_wait returned without error): those whose
// delay is up or, with Config.WriteDeferredWhenQuiet, all of them, a
// bounded number a round, from a round that found nothing to read until
// none is left or a busy round comes.
func (p *poller) writeDeferred(n int, waited bool) {
	now := time.Now().UnixNano()
	if p.t.cfg.WriteDeferredWhenQuiet {
		switch {
		case n == 0 && waited:
			// Nothing to read for quietAfter (the longest timeout while
			// frames are deferred), or nothing while draining.
			p.draining = true
		case n >= busyRound:
			p.draining = false
		}
		if p.draining {
			now = math.MaxInt64
		}
	}
	if p.flushDeferred(now) == 0 {
		p.draining = false
	}
}

// takeDue moves up to maxDeferredPerRound deferrals due at now to due and
// returns the next deadline (0: none), which is already past when more are
// due.
func (p *poller) takeDue(due []deferral, now int64) ([]deferral, int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for n < len(p.deferred) && n < maxDeferredPerRound && p.deferred[n].at <= now {
		n++
	}
	due = append(due, p.deferred[:n]...)
	clear(p.deferred[:n])
	p.deferred = p.deferred[n:]
	if len(p.deferred) == 0 {
		p.deferred = nil
		return due, 0
	}
	return due, p.deferred[0].at
}

// kick has the poller goroutine look at c: finish it, or decode bytes that
// arrived with the handshake.
func (p *poller) kick(c *Conn) {
	var one = [8]byte{1}
	p.mu.Lock()
	p.kicked = append(p.kicked, c)
	if !p.closed {
		_, _ = unix.Write(p.evfd, one[:])
	}
	p.mu.Unlock()
}

func (p *poller) wake() {
	var one = [8]byte{1}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		_, _ = unix.Write(p.evfd, one[:])
	}
}

func (p *poller) shutdown() {
	p.mu.Lock()
	p.stop = true
	p.mu.Unlock()
	p.wake()
}

func (p *poller) run() {
	events := make([]unix.EpollEvent, 256)
	sweepEvery := p.t.sweepInterval()
	var nextSweep int64
	for {
		timeout := -1
		p.mu.Lock()
		stop := p.stop
		if len(p.watched) > 0 {
			timeout = int(sweepEvery / time.Millisecond)
		}
		if len(p.deferred) > 0 {
			// Round up: waking a little late lets more frames ride along.
			ms := int((p.deferred[0].at - time.Now().UnixNano() + int64(time.Millisecond) - 1) / int64(time.Millisecond))
			if p.t.cfg.WriteDeferredWhenQuiet {
				ms = min(ms, int(quietAfter/time.Millisecond))
			}
			if p.draining {
				ms = 0
			}
			if timeout < 0 || ms < timeout {
				timeout = max(ms, 0)
			}
		}
		p.mu.Unlock()
		if stop {
			p.closeAll()
			return
		}
		n, err := unix.EpollWait(p.epfd, events, timeout)
		if err != nil && err != unix.EINTR {
			p.t.log("epoll_wait failed", err)
			p.closeAll()
			return
		}
		now := time.Now().UnixNano()
		for i := 0; i < n; i++ {
			ev := &events[i]
			id := getID(ev)
			if id == wakeID {
				var b [8]byte
				_, _ = unix.Read(p.evfd, b[:])
				continue
			}
			p.mu.Lock()
			c := p.conns[id]
			p.mu.Unlock()
			if c == nil {
				continue // closed earlier in this batch
			}
			if ev.Events&unix.EPOLLOUT != 0 {
				c.mu.Lock()
				c.flushLocked()
				c.mu.Unlock()
			}
			if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				if p.ring != nil {
					p.ready = append(p.ready, c)
				} else {
					p.read(c, now)
				}
			}
		}
		if len(p.ready) > 0 {
			p.readBatch(p.ready, now)
			p.ready = p.ready[:0]
		}
		p.handleKicks(now)
		if p.t.cfg.OnRoundEnd != nil && n > 0 {
			p.t.cfg.OnRoundEnd()
		}
		p.writeDeferred(n, err == nil)
		if now >= nextSweep {
			p.sweep(now)
			nextSweep = now + int64(sweepEvery)
		}
	}
}

// maxReadsPerEvent bounds the reads one readiness event gets, so that a
// peer that never stops sending cannot keep the poller from the others:
// level-triggered epoll reports it again on the next round.
const maxReadsPerEvent = 4

func (p *poller) read(c *Conn, now int64) {
	for range maxReadsPerEvent {
		n, err := RawRead(c.fd, p.buf)
		switch {
		case n > 0:
			if !c.consume(p.buf[:n], now) {
				p.handleKicks(now)
				return
			}
			if n < len(p.buf) {
				return // drained; level-triggered epoll calls again if more came
			}
		case n == 0 && err == nil:
			p.finish(c, ErrPeerGone)
			return
		case err == unix.EAGAIN:
			return
		case err == unix.EINTR:
		default:
			p.finish(c, ErrPeerGone)
			return
		}
	}
}

func (p *poller) handleKicks(now int64) {
	p.mu.Lock()
	kicked := p.kicked
	p.kicked = nil
	p.mu.Unlock()
	for _, c := range kicked {
		c.mu.Lock()
		st, why := c.state, c.finishWith
		c.mu.Unlock()
		switch {
		case st == stateFinishing:
			p.finish(c, why)
		case st < stateFinishing && len(c.in) > 0:
			// Bytes the client sent right behind its upgrade request.
			pending := c.in
			c.in = nil
			c.consume(pending, now)
			p.mu.Lock()
			again := len(p.kicked) > 0
			p.mu.Unlock()
			if again {
				p.handleKicks(now)
			}
		}
	}
}

// sweep enforces write and close deadlines. Lock order is c.mu before
// p.mu, so the watched set is copied first.
func (p *poller) sweep(now int64) {
	writeTimeout := int64(p.t.cfg.WriteTimeout)
	p.mu.Lock()
	if len(p.watched) == 0 {
		p.mu.Unlock()
		return
	}
	list := make([]*Conn, 0, len(p.watched))
	for c := range p.watched {
		list = append(list, c)
	}
	p.mu.Unlock()
	var done []*Conn
	for _, c := range list {
		c.mu.Lock()
		switch {
		case c.state >= stateFinishing:
			done = append(done, c)
		case c.state == stateCloseSent && now >= c.closeBy:
			c.finishLocked(ErrCloseTimeout)
		case c.partial != nil && now-c.stallSince >= writeTimeout:
			c.finishLocked(ErrWriteTimeout)
		case c.partial == nil && c.state == stateOpen:
			done = append(done, c)
		}
		c.mu.Unlock()
	}
	p.mu.Lock()
	for _, c := range done {
		delete(p.watched, c)
	}
	p.mu.Unlock()
	p.handleKicks(now)
}

// finish closes c's socket and tells its handler, once.
func (p *poller) finish(c *Conn, err error) {
	c.mu.Lock()
	if c.finishOnce {
		c.mu.Unlock()
		return
	}
	c.finishOnce = true
	if c.state < stateFinishing {
		c.finishWith = err
	}
	c.state = stateClosed
	c.queue, c.ctrl, c.partial = nil, nil, nil
	info := CloseInfo{PeerCode: c.peer, PeerReason: c.peerRs, Code: c.code, Err: c.finishWith}
	if c.failErr != nil {
		info.Err = c.failErr
	}
	closeLater := c.inRing
	c.closeAfterRing = closeLater
	c.mu.Unlock()

	p.mu.Lock()
	delete(p.conns, c.id)
	delete(p.watched, c)
	p.mu.Unlock()
	_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
	if !closeLater {
		_ = unix.Close(c.fd)
	}
	c.in, c.msg = nil, nil
	p.t.count.Add(-1)
	c.h.OnClose(c, info)
}

func (p *poller) closeAll() {
	p.mu.Lock()
	all := make([]*Conn, 0, len(p.conns))
	for _, c := range p.conns {
		all = append(all, c)
	}
	p.mu.Unlock()
	for _, c := range all {
		c.mu.Lock()
		c.finishLocked(ErrTransportClosed)
		c.mu.Unlock()
		p.finish(c, ErrTransportClosed)
	}
	p.mu.Lock()
	p.kicked = nil
	p.deferred = nil
	p.closed = true
	p.mu.Unlock()
	unix.Close(p.epfd)
	unix.Close(p.evfd)
	p.closeRings()
}
