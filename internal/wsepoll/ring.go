//go:build linux

package wsepoll

import (
	"time"

	"github.com/backchannel/backchannel/internal/uring"
	"golang.org/x/sys/unix"
)

// batchEntries is the most writes (or reads) one system call carries.
const batchEntries = 256

// readSlot is the size of each socket's share of a poller's batched read:
// control messages and votes are far smaller; a read that fills it is
// followed by plain reads.
const readSlot = 4 << 10

// Batch gathers writes to many connections and makes them with one system
// call (io_uring) instead of one each: a fan-out of one frame to thousands
// of links, or the acknowledgements a poller flushes together. Send
// behaves as Conn.Send; the writes of frames that reached an idle socket
// happen at Flush (or earlier, when the batch is full). A nil *Batch sends
// each frame at once, so callers need no second path for kernels without
// io_uring. A Batch is used by one goroutine at a time.
type Batch struct {
	t      *Transport
	ring   *uring.Ring
	conns  []*Conn
	frames [][]byte
	done   []uring.Completion
}

func newBatch(t *Transport) (*Batch, error) {
	r, err := uring.New(batchEntries)
	if err != nil {
		return nil, err
	}
	return &Batch{t: t, ring: r}, nil
}

// Batched reports whether the transport batches system calls with
// io_uring.
func (t *Transport) Batched() bool { return t != nil && t.ringOK }

// Batch returns a write batch for the calling goroutine, or nil when the
// transport makes plain writes (no io_uring, Config.PlainSyscalls, or all
// batches busy, or t nil); Release gives it back.
func (t *Transport) Batch() *Batch {
	if t == nil || !t.ringOK {
		return nil
	}
	select {
	case b := <-t.batches:
		return b
	default:
	}
	if t.batchesMade.Add(1) > int32(cap(t.batches)) {
		t.batchesMade.Add(-1)
		return nil
	}
	b, err := newBatch(t)
	if err != nil {
		t.batchesMade.Add(-1)
		return nil
	}
	return b
}

// Release flushes b and returns it to its transport.
func (b *Batch) Release() {
	if b == nil {
		return
	}
	b.Flush()
	t := b.t
	t.batchMu.Lock()
	defer t.batchMu.Unlock()
	if b.ring != nil && !t.closed.Load() {
		t.batches <- b // never full: at most cap(t.batches) are made
		return
	}
	if b.ring != nil {
		b.ring.Close()
	}
	t.batchesMade.Add(-1)
}

// closeBatches closes the idle batches' rings when the transport closes;
// batches still out close theirs on Release.
func (t *Transport) closeBatches() {
	t.batchMu.Lock()
	defer t.batchMu.Unlock()
	for {
		select {
		case b := <-t.batches:
			b.ring.Close()
		default:
			return
		}
	}
}

// Send is c.Send with the write, if one is due now, made at Flush.
func (b *Batch) Send(c *Conn, frame []byte, key string, critical bool) SendResult {
	b.makeRoom()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sendLocked(frame, key, critical, b)
}

// usable reports whether b batches (a nil Batch, or one whose ring was
// given up, writes at once).
func (b *Batch) usable() bool { return b != nil && b.ring != nil }

// makeRoom flushes a full batch; callers do it before taking a
// connection's lock, since Flush takes the locks of the batch's
// connections.
func (b *Batch) makeRoom() {
	if b.usable() && b.ring.Space() == 0 {
		b.Flush()
	}
}

// add queues f as c's write; callers hold c.mu and have checked that the
// socket is idle and the ring has room. Until Flush, f is c's partial
// frame: other senders queue behind it, and the poller does not close the
// descriptor under the queued write.
func (b *Batch) add(c *Conn, f []byte) SendResult {
	if err := b.ring.Send(c.fd, f, uint64(len(b.conns))); err != nil {
		return c.writeLocked(f) // no room after all: write it now
	}
	c.partial = f
	c.inRing = true
	b.conns = append(b.conns, c)
	b.frames = append(b.frames, f)
	return Sent
}

// Flush makes the batch's writes and settles each connection: done, a
// rest left for EPOLLOUT, or closed on a socket error.
func (b *Batch) Flush() {
	if b == nil || len(b.conns) == 0 {
		return
	}
	_, err := b.ring.Submit(len(b.conns))
	b.done = b.ring.Reap(b.done[:0])
	for _, d := range b.done {
		b.settle(b.conns[d.Tag], b.frames[d.Tag], d.Result)
		b.conns[d.Tag] = nil
	}
	if err != nil {
		// The kernel took none of it (or the ring is broken): the ring is
		// given up, and the writes go through EPOLLOUT instead.
		b.t.log("batched write failed; this batch writes one by one from now on", err)
		b.ring.Close()
		b.ring = nil
		for i, c := range b.conns {
			if c != nil {
				b.settle(c, b.frames[i], -int32(unix.EAGAIN))
			}
		}
	}
	clear(b.conns)
	clear(b.frames)
	b.conns, b.frames = b.conns[:0], b.frames[:0]
}

// settle applies one write's outcome (bytes written or -errno) to its
// connection.
func (b *Batch) settle(c *Conn, f []byte, result int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inRing = false
	if c.closeAfterRing {
		// The poller finished c while the write was queued and left the
		// descriptor to us.
		c.closeAfterRing = false
		_ = unix.Close(c.fd)
		return
	}
	if c.state >= stateFinishing {
		return
	}
	n := int(result)
	switch {
	case result >= 0:
	case -result == int32(unix.EAGAIN):
		n = 0
	default:
		c.finishLocked(ErrPeerGone)
		return
	}
	if n == len(f) {
		c.partial = nil
		if len(c.ctrl) > 0 || len(c.queue) > 0 {
			c.flushLocked() // what others sent while the write was queued
		} else {
			c.afterDrainLocked()
		}
		return
	}
	c.partial = f[n:]
	c.stallSince = time.Now().UnixNano()
	c.p.arm(c, true)
	c.p.watch(c)
}

// readBatch reads the ready connections of one epoll round with one system
// call; what does not fit a slot is read by p.read.
func (p *poller) readBatch(ready []*Conn, now int64) {
	for i, c := range ready {
		_ = p.ring.Recv(c.fd, p.slots[i], uint64(i))
	}
	_, err := p.ring.Submit(len(ready))
	p.done = p.ring.Reap(p.done[:0])
	if err != nil {
		p.t.log("batched read failed; this poller reads one by one from now on", err)
		p.ring.Close()
		p.ring = nil
	}
	for _, d := range p.done {
		c := ready[d.Tag]
		ready[d.Tag] = nil
		if c.finishOnce {
			continue // finished earlier in this round
		}
		switch n := int(d.Result); {
		case n > 0:
			if !c.consume(p.slots[d.Tag][:n], now) {
				p.handleKicks(now)
				continue
			}
			if n == readSlot {
				p.read(c, now)
			}
		case n == 0:
			p.finish(c, ErrPeerGone)
		case -d.Result == int32(unix.EAGAIN):
		case -d.Result == int32(unix.EINTR):
			p.read(c, now)
		default:
			p.finish(c, ErrPeerGone)
		}
	}
	for _, c := range ready {
		if c != nil && !c.finishOnce {
			p.read(c, now) // not read by the ring
		}
	}
	clear(ready)
}
