//go:build linux

package votebench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/backchannel/backchannel/internal/uring"
	"github.com/backchannel/backchannel/internal/wsclient"
	"github.com/backchannel/backchannel/internal/wsepoll"
	"golang.org/x/sys/unix"
)

// link is one voter's control link once it is open: a bare non-blocking
// socket read by the worker's epoll loop and written by its sender. No
// goroutine and no buffer belong to it while it is idle.
type link struct {
	fd    int
	voter int    // index among the worker's voters
	in    []byte // the start of a frame not yet complete
	wmu   sync.Mutex
	wpend []byte // bytes the socket did not take yet
	// A vote of this link waits in the sender's batch: frames sent meanwhile
	// (pongs) wait in wpend behind it. Under wmu.
	batched bool
	polls   int // poll frames received; worker.mu
	gone    atomic.Bool
}

// openLink dials url from src, upgrades to WebSocket with a hand-written
// request, says hello, watches stream and waits for the endpoint, as a
// player does. It then takes its own descriptor of the socket (non-blocking,
// for epoll) and returns the bytes that arrived behind the endpoint.
func openLink(ctx context.Context, wsURL string, src net.IP, stream string) (fd int, early []byte, err error) {
	nc, br, err := wsclient.Dial(ctx, wsURL, src, "User-Agent: backchannel-votebench/2\r\n", 2048)
	if err != nil {
		return -1, nil, err
	}
	defer nc.Close()
	var m masker
	m.seed(uint64(time.Now().UnixNano()))
	send := func(s string) error {
		_, err := nc.Write(m.frame(nil, 0x1, []byte(s)))
		return err
	}
	if err := send(`{"t":"hello","player":"votebench"}`); err != nil {
		return -1, nil, err
	}
	if err := readUntil(br, `{"t":"welcome"`); err != nil {
		return -1, nil, fmt.Errorf("welcome: %w", err)
	}
	if err := send(`{"t":"watch","stream":"` + stream + `"}`); err != nil {
		return -1, nil, err
	}
	if err := readUntil(br, `{"t":"endpoint"`); err != nil {
		return -1, nil, fmt.Errorf("endpoint: %w", err)
	}
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		early = append([]byte(nil), b...)
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return -1, nil, errors.New("not a socket")
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return -1, nil, err
	}
	var dupErr error
	fd = -1
	if err := raw.Control(func(s uintptr) { fd, dupErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil || dupErr != nil {
		return -1, nil, errors.Join(err, dupErr)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return -1, nil, err
	}
	return fd, early, nil
}

// readUntil reads server frames until a text frame starting with prefix.
func readUntil(br *bufio.Reader, prefix string) error {
	for range 16 {
		op, b, err := wsclient.ReadFrame(br, nil)
		if err != nil {
			return err
		}
		if op == wsclient.OpClose {
			return fmt.Errorf("closed by the server: %q", b)
		}
		if bytes.HasPrefix(b, []byte(prefix)) {
			return nil
		}
	}
	return fmt.Errorf("no %s frame", prefix)
}

// masker builds masked client frames. The masks come from a xorshift
// generator: RFC 6455 wants them unpredictable to defeat cache poisoning by
// scripts, which a load generator has no reason to fear, and crypto/rand per
// frame would cost more than the rest of the frame.
type masker struct{ s uint64 }

func (m *masker) seed(s uint64) { m.s = s | 1 }

func (m *masker) next() uint32 {
	m.s ^= m.s << 13
	m.s ^= m.s >> 7
	m.s ^= m.s << 17
	return uint32(m.s)
}

// frame appends one masked, final frame with opcode op to b.
func (m *masker) frame(b []byte, op byte, payload []byte) []byte {
	var key [4]byte
	binary.LittleEndian.PutUint32(key[:], m.next())
	return wsclient.AppendFrame(b, op, key, payload)
}

// send writes a frame on the link, keeping what the socket does not take
// for the next call (flushPending).
func (l *link) send(frame []byte) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if l.batched {
		l.wpend = append(l.wpend, frame...)
		return nil
	}
	if len(l.wpend) > 0 {
		l.wpend = append(l.wpend, frame...)
		return l.flushLocked()
	}
	n, err := wsepoll.RawWrite(l.fd, frame)
	if err != nil {
		return err
	}
	if n < len(frame) {
		l.wpend = append(l.wpend, frame[n:]...)
	}
	return nil
}

func (l *link) flushLocked() error {
	n, err := wsepoll.RawWrite(l.fd, l.wpend)
	if err != nil {
		return err
	}
	l.wpend = l.wpend[:copy(l.wpend, l.wpend[n:])]
	return nil
}

// pending reports whether bytes wait for the socket.
func (l *link) pending() bool {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	return len(l.wpend) > 0
}

// flushPending retries what the socket did not take.
func (l *link) flushPending() error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if len(l.wpend) == 0 || l.batched {
		return nil
	}
	return l.flushLocked()
}

// frameHeader parses a server (unmasked) frame header: its opcode, payload
// length and header size, or size 0 when b does not hold it yet.
func frameHeader(b []byte) (op byte, n, size int) {
	if len(b) < 2 {
		return 0, 0, 0
	}
	op = b[0] & 0x0f
	switch l := b[1] & 0x7f; l {
	case 126:
		if len(b) < 4 {
			return 0, 0, 0
		}
		return op, int(binary.BigEndian.Uint16(b[2:4])), 4
	case 127:
		if len(b) < 10 {
			return 0, 0, 0
		}
		return op, int(binary.BigEndian.Uint64(b[2:10])), 10
	default:
		return op, int(l), 2
	}
}

// sendBatch writes the votes due together with one system call (io_uring)
// instead of a write each; without io_uring it writes each at once.
type sendBatch struct {
	ring   *uring.Ring
	links  []*link
	frames [][]byte
	slab   [][]byte // a frame buffer per entry, reused
	done   []uring.Completion
}

const sendBatchEntries = 128

func newSendBatch() *sendBatch {
	b := &sendBatch{}
	if r, err := uring.New(sendBatchEntries); err == nil {
		b.ring = r
		for range sendBatchEntries {
			b.slab = append(b.slab, make([]byte, 0, 256))
		}
	}
	return b
}

func (b *sendBatch) close() {
	if b.ring != nil {
		b.ring.Close()
	}
}

// buffer is where the next frame is built.
func (b *sendBatch) buffer() []byte {
	if b.ring == nil {
		return b.scratch()
	}
	return b.slab[len(b.links)][:0]
}

func (b *sendBatch) scratch() []byte {
	if len(b.slab) == 0 {
		b.slab = append(b.slab, make([]byte, 0, 256))
	}
	return b.slab[0][:0]
}

// send queues frame (built in buffer()) for l, or writes it now. The
// returned links (into stalled) have bytes their socket did not take.
func (b *sendBatch) send(l *link, frame []byte, stalled []*link) ([]*link, error) {
	if b.ring == nil {
		return sendNow(l, frame, stalled)
	}
	l.wmu.Lock()
	if l.batched || len(l.wpend) > 0 {
		l.wmu.Unlock()
		if l.batched {
			// The link's previous vote is still in this batch.
			stalled = b.flush(stalled)
			return b.send(l, append(b.scratch(), frame...), stalled)
		}
		return sendNow(l, frame, stalled)
	}
	l.batched = true
	l.wmu.Unlock()
	i := len(b.links)
	b.slab[i] = frame[:0]
	_ = b.ring.Send(l.fd, frame, uint64(i))
	b.links = append(b.links, l)
	b.frames = append(b.frames, frame)
	if len(b.links) == sendBatchEntries {
		stalled = b.flush(stalled)
	}
	return stalled, nil
}

// sendNow writes frame on l with its own system call.
func sendNow(l *link, frame []byte, stalled []*link) ([]*link, error) {
	err := l.send(frame)
	if err == nil && l.pending() {
		stalled = append(stalled, l)
	}
	return stalled, err
}

// flush makes the queued writes; links whose socket took only part of a
// frame (or that are lost) are appended to stalled for the caller's retry.
func (b *sendBatch) flush(stalled []*link) []*link {
	if b.ring == nil || len(b.links) == 0 {
		return stalled
	}
	_, err := b.ring.Submit(len(b.links))
	b.done = b.ring.Reap(b.done[:0])
	for _, d := range b.done {
		b.settle(b.links[d.Tag], b.frames[d.Tag], d.Result)
		if b.links[d.Tag].pending() {
			stalled = append(stalled, b.links[d.Tag])
		}
		b.links[d.Tag] = nil
	}
	if err != nil {
		for i, l := range b.links {
			if l != nil {
				b.settle(l, b.frames[i], 0)
				stalled = append(stalled, l)
			}
		}
		b.ring.Close()
		b.ring = nil
	}
	clear(b.links)
	clear(b.frames)
	b.links, b.frames = b.links[:0], b.frames[:0]
	return stalled
}

// settle puts what the socket did not take of f in front of what was sent
// to l meanwhile; a socket error leaves it all there for the retry, which
// reports it.
func (b *sendBatch) settle(l *link, f []byte, result int32) {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.batched = false
	n := int(max(result, 0))
	if n == len(f) && len(l.wpend) == 0 {
		return
	}
	l.wpend = append(append([]byte(nil), f[n:]...), l.wpend...)
	_ = l.flushLocked()
}
