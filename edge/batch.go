package edge

import (
	"net"
	"sync"

	"golang.org/x/net/ipv4"
)

// sendBatch gathers the SRTP packets of one fan-out round (a stream
// packet, encrypted once per viewer) and sends them with as few system
// calls as the kernel allows: sendmmsg on the ICE UDP socket. Every viewer
// of a stream track writes into the track's batch from the track's writer
// goroutine and the batch is flushed once the packet went to every viewer,
// so it needs no lock. Buffers are kept between rounds: a steady fan-out
// allocates nothing.
type sendBatch struct {
	conn *ipv4.PacketConn
	msgs []ipv4.Message
	bufs [][]byte
	n    int
	sent uint64 // datagrams the kernel took
	errs uint64
}

// maxDatagram holds an RTP packet of a full Ethernet MTU plus the SRTP
// tag.
const maxDatagram = 1500 + 32

func newSendBatch(conn *net.UDPConn) *sendBatch {
	return &sendBatch{conn: ipv4.NewPacketConn(conn)}
}

// slot returns an empty buffer for the next datagram.
func (b *sendBatch) slot() []byte {
	if b.n == len(b.bufs) {
		b.bufs = append(b.bufs, make([]byte, 0, maxDatagram))
		b.msgs = append(b.msgs, ipv4.Message{Buffers: make([][]byte, 1)})
	}
	return b.bufs[b.n][:0]
}

// add queues the datagram written into the current slot.
func (b *sendBatch) add(datagram []byte, to *net.UDPAddr) {
	b.msgs[b.n].Buffers[0] = datagram
	b.msgs[b.n].Addr = to
	b.n++
}

// flush sends what is queued. A datagram the kernel refuses (a viewer's
// address unreachable) is dropped, as a plain write's would be.
func (b *sendBatch) flush() {
	msgs := b.msgs[:b.n]
	for len(msgs) > 0 {
		k, _ := b.conn.WriteBatch(msgs, 0)
		if k <= 0 {
			b.errs++
			k = 1 // skip the datagram the kernel choked on
		} else {
			b.sent += uint64(k)
		}
		msgs = msgs[k:]
	}
	for i := range b.msgs[:b.n] {
		b.msgs[i].Addr = nil
	}
	b.n = 0
}

// batches hands out one sendBatch per stream track, shared by the
// track's viewers.
type batches struct {
	conn *net.UDPConn
	mu   sync.Mutex
	m    map[any]*batchRef
}

type batchRef struct {
	b    *sendBatch
	refs int
}

func (bs *batches) acquire(track any) *sendBatch {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	if bs.m == nil {
		bs.m = map[any]*batchRef{}
	}
	r := bs.m[track]
	if r == nil {
		r = &batchRef{b: newSendBatch(bs.conn)}
		bs.m[track] = r
	}
	r.refs++
	return r.b
}

func (bs *batches) release(track any) {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	if r := bs.m[track]; r != nil {
		if r.refs--; r.refs <= 0 {
			delete(bs.m, track)
		}
	}
}
