//go:build linux

// Package uring is a small Linux io_uring ring for batching socket reads
// and writes: many operations submitted and reaped with one system call
// instead of one call each. It owns only the ring (set-up, submission
// queue entries, completion reaping); callers decide what to batch.
//
// Why: on machines where a system call is dear (a paravirtualised guest
// here pays ~1.4 µs for a null call), a server that reads one small frame
// from each of thousands of ready links, and writes one to each, spends a
// large share of its time entering and leaving the kernel. A ring turns N
// reads after one epoll_wait into one io_uring_enter.
//
// A Ring is not safe for concurrent use: one goroutine owns it, and
// should hold its OS thread (runtime.LockOSThread) while it does.
package uring

import (
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Operation codes (include/uapi/linux/io_uring.h).
const (
	opNop  = 0
	opSend = 26
	opRecv = 27
)

const (
	offSQRing = 0
	offCQRing = 0x8000000
	offSQEs   = 0x10000000

	enterGetEvents = 1 << 0

	featSingleMmap = 1 << 0

	setupClamp       = 1 << 4
	setupCoopTaskrun = 1 << 8
)

type sqringOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

type cqringOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

type params struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFD uint32
	resv                                                                   [3]uint32
	sqOff                                                                  sqringOffsets
	cqOff                                                                  cqringOffsets
}

// sqe is struct io_uring_sqe (64 bytes).
type sqe struct {
	opcode      uint8
	flags       uint8
	ioprio      uint16
	fd          int32
	off         uint64
	addr        uint64
	len         uint32
	opFlags     uint32
	userData    uint64
	bufIndex    uint16
	personality uint16
	spliceFDIn  int32
	addr3       uint64
	pad         uint64
}

// Completion is one finished operation: the tag it was submitted with and
// its result (bytes moved, or a negative errno).
type Completion struct {
	Tag    uint64
	Result int32
	Flags  uint32
}

// Err is the completion's error, nil when it succeeded.
func (c Completion) Err() error {
	if c.Result < 0 {
		return syscall.Errno(-c.Result)
	}
	return nil
}

// Ring is one io_uring instance.
type Ring struct {
	fd int

	sqRing, cqRing, sqesMem []byte

	sqHead, sqTail, sqMask *uint32
	sqArray                []uint32
	sqes                   []sqe
	cqHead, cqTail, cqMask *uint32
	cqes                   []Completion

	pending uint32 // entries written since the last submit
	entries uint32
}

// ErrUnsupported is returned by New when the kernel has no io_uring or
// it is switched off (kernel.io_uring_disabled).
var ErrUnsupported = errors.New("uring: io_uring not available")

// New sets up a ring with room for at least entries submissions in flight.
func New(entries uint32) (*Ring, error) {
	var p params
	p.flags = setupClamp | setupCoopTaskrun
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	if errno == unix.EINVAL {
		// COOP_TASKRUN needs 5.19; try without it.
		p = params{flags: setupClamp}
		fd, _, errno = unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	}
	if errno != 0 {
		if errno == unix.ENOSYS || errno == unix.EPERM {
			return nil, fmt.Errorf("%w: %v", ErrUnsupported, errno)
		}
		return nil, fmt.Errorf("uring: setup: %w", errno)
	}
	r := &Ring{fd: int(fd), entries: p.sqEntries}
	if err := r.mapRings(&p); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

func (r *Ring) mapRings(p *params) error {
	sqSize := int(p.sqOff.array + p.sqEntries*4)
	cqSize := int(p.cqOff.cqes + p.cqEntries*uint32(unsafe.Sizeof(Completion{})))
	single := p.features&featSingleMmap != 0
	if single {
		sqSize = max(sqSize, cqSize)
	}
	var err error
	r.sqRing, err = unix.Mmap(r.fd, offSQRing, sqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("uring: map submission ring: %w", err)
	}
	if single {
		r.cqRing = r.sqRing
	} else {
		r.cqRing, err = unix.Mmap(r.fd, offCQRing, cqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
		if err != nil {
			return fmt.Errorf("uring: map completion ring: %w", err)
		}
	}
	sqesSize := int(p.sqEntries) * int(unsafe.Sizeof(sqe{}))
	r.sqesMem, err = unix.Mmap(r.fd, offSQEs, sqesSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("uring: map submission entries: %w", err)
	}
	at := func(b []byte, off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&b[off])) }
	r.sqHead = at(r.sqRing, p.sqOff.head)
	r.sqTail = at(r.sqRing, p.sqOff.tail)
	r.sqMask = at(r.sqRing, p.sqOff.ringMask)
	r.sqArray = unsafe.Slice(at(r.sqRing, p.sqOff.array), p.sqEntries)
	r.sqes = unsafe.Slice((*sqe)(unsafe.Pointer(&r.sqesMem[0])), p.sqEntries)
	r.cqHead = at(r.cqRing, p.cqOff.head)
	r.cqTail = at(r.cqRing, p.cqOff.tail)
	r.cqMask = at(r.cqRing, p.cqOff.ringMask)
	r.cqes = unsafe.Slice((*Completion)(unsafe.Pointer(&r.cqRing[p.cqOff.cqes])), p.cqEntries)
	// The array indirection is identity: entry i of the ring is sqes[i].
	for i := range r.sqArray {
		r.sqArray[i] = uint32(i)
	}
	return nil
}

// Close releases the ring. Operations still in flight are cancelled by
// the kernel; their buffers must stay untouched until Close returns.
func (r *Ring) Close() error {
	if r.sqesMem != nil {
		_ = unix.Munmap(r.sqesMem)
	}
	if r.cqRing != nil && (r.sqRing == nil || &r.cqRing[0] != &r.sqRing[0]) {
		_ = unix.Munmap(r.cqRing)
	}
	if r.sqRing != nil {
		_ = unix.Munmap(r.sqRing)
	}
	r.sqRing, r.cqRing, r.sqesMem = nil, nil, nil
	return unix.Close(r.fd)
}

// Space is how many more operations fit before Submit must be called.
func (r *Ring) Space() int {
	head := atomic.LoadUint32(r.sqHead)
	return int(r.entries - (*r.sqTail + r.pending - head))
}

func (r *Ring) next() *sqe {
	tail := *r.sqTail + r.pending
	if tail-atomic.LoadUint32(r.sqHead) >= r.entries {
		return nil
	}
	r.pending++
	e := &r.sqes[tail&*r.sqMask]
	*e = sqe{}
	return e
}

// ErrFull is returned when the submission queue has no room: Submit first.
var ErrFull = errors.New("uring: submission queue full")

func (r *Ring) prep(op uint8, fd int, buf []byte, flags uint32, tag uint64) error {
	e := r.next()
	if e == nil {
		return ErrFull
	}
	e.opcode = op
	e.fd = int32(fd)
	if len(buf) > 0 {
		e.addr = uint64(uintptr(unsafe.Pointer(&buf[0])))
	}
	e.len = uint32(len(buf))
	e.opFlags = flags
	e.userData = tag
	return nil
}

// Recv queues a receive of up to len(buf) bytes from socket fd. It never
// waits for data: a socket with nothing to read completes with -EAGAIN.
// buf must stay alive and untouched until its completion is reaped.
func (r *Ring) Recv(fd int, buf []byte, tag uint64) error {
	return r.prep(opRecv, fd, buf, unix.MSG_DONTWAIT, tag)
}

// Send queues a send of buf on socket fd, with the same rules: a full
// socket completes with -EAGAIN or a short count, never waits.
func (r *Ring) Send(fd int, buf []byte, tag uint64) error {
	return r.prep(opSend, fd, buf, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, tag)
}

// Nop queues an operation that does nothing but complete (tests).
func (r *Ring) Nop(tag uint64) error { return r.prep(opNop, -1, nil, 0, tag) }

// Submit hands every queued operation to the kernel and waits until at
// least wait completions are ready, in one system call.
func (r *Ring) Submit(wait int) (int, error) {
	n := r.pending
	atomic.StoreUint32(r.sqTail, *r.sqTail+n)
	r.pending = 0
	flags := uintptr(0)
	if wait > 0 {
		flags = enterGetEvents
	}
	for {
		// Raw: every operation this package queues completes without
		// waiting (MSG_DONTWAIT), so the call never blocks, and the
		// scheduler's bookkeeping for a blocking call is saved.
		done, _, errno := unix.RawSyscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(n), uintptr(wait), flags, 0, 0)
		if errno == unix.EINTR {
			n = 0
			continue
		}
		if errno != 0 {
			return int(done), fmt.Errorf("uring: enter: %w", errno)
		}
		return int(done), nil
	}
}

// Reap appends the completions ready now to into and marks them seen.
func (r *Ring) Reap(into []Completion) []Completion {
	head := *r.cqHead
	tail := atomic.LoadUint32(r.cqTail)
	for ; head != tail; head++ {
		into = append(into, r.cqes[head&*r.cqMask])
	}
	atomic.StoreUint32(r.cqHead, head)
	return into
}
