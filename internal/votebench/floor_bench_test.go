//go:build linux

package votebench

import (
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/backchannel/backchannel/internal/uring"
)

// BenchmarkLoopbackFloor is the raw baseline of the vote path: what one
// vote-sized frame costs in the kernel when, as in votebench, every frame
// is its own write on its own loopback TCP link and the receiver reads its
// links through one epoll. No WebSocket, no parsing, no ack: the CPU of
// both processes' sides (write, TCP on loopback, epoll_wait, read) per
// frame is the floor under server+driver CPU per vote.
//
//	go test -run - -bench LoopbackFloor -benchtime 400000x ./internal/votebench
//
// It reports cpu-µs/frame: user+system time of this process (both sides
// live in it) per frame. Two variants: "syscalls" makes each write and
// each read its own system call; "ring" submits the writes 128 at a time
// and the reads of one epoll_wait round together through io_uring
// (internal/uring), as the epoll transport and votebench's workers do.
func BenchmarkLoopbackFloor(b *testing.B) {
	b.Run("syscalls", func(b *testing.B) { loopbackFloor(b, false) })
	b.Run("ring", func(b *testing.B) { loopbackFloor(b, true) })
}

func loopbackFloor(b *testing.B, ring bool) {
	const links = 5000 // two descriptors each, well under the 20,000 limit
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(ep)
	var senders []int
	// rawFD takes the socket out of Go's poller: a blocking descriptor
	// for plain syscalls; the net.Conn is closed, the socket stays.
	rawFD := func(c net.Conn) int {
		f, err := c.(*net.TCPConn).File()
		c.Close()
		if err != nil {
			b.Fatal(err)
		}
		fd, err := unix.Dup(int(f.Fd()))
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
		return fd
	}
	for range links {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			b.Fatal(err)
		}
		senders = append(senders, rawFD(c))
		r := rawFD(s)
		if err := unix.SetNonblock(r, true); err != nil {
			b.Fatal(err)
		}
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, r, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(r)}); err != nil {
			b.Fatal(err)
		}
		defer unix.Close(r)
	}
	for _, fd := range senders {
		defer unix.Close(fd)
	}
	// A masked WebSocket text frame of a vote's size.
	frame := append([]byte{0x81, 0x80 | 40, 1, 2, 3, 4}, make([]byte, 40)...)

	got := make(chan int, 1)
	if ring {
		go readRing(b, ep, len(frame), got)
	} else {
		go readPlain(b, ep, len(frame), got)
	}

	var before, after unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &before)
	b.ResetTimer()
	start := time.Now()
	if ring {
		writeRing(b, senders, frame)
	} else {
		for i := range b.N {
			if _, err := unix.Write(senders[i%links], frame); err != nil {
				b.Fatal(err)
			}
		}
	}
	total := <-got
	b.StopTimer()
	_ = unix.Getrusage(unix.RUSAGE_SELF, &after)
	if total != b.N {
		b.Fatalf("read %d frames, sent %d", total, b.N)
	}
	cpu := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
	sys := time.Duration(after.Stime.Nano() - before.Stime.Nano())
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/frame")
	b.ReportMetric(float64(sys.Microseconds())/float64(b.N), "sys-µs/frame")
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "frames/s")
}

func readPlain(b *testing.B, ep, frameLen int, got chan<- int) {
	runtime.LockOSThread()
	events := make([]unix.EpollEvent, 256)
	buf := make([]byte, 4096)
	total := 0
	for total < b.N {
		n, err := unix.EpollWait(ep, events, 100)
		if err != nil && err != syscall.EINTR {
			break
		}
		for _, ev := range events[:max(n, 0)] {
			for {
				m, err := unix.Read(int(ev.Fd), buf)
				if m > 0 {
					total += m / frameLen
				}
				if err != nil || m < len(buf) {
					break
				}
			}
		}
	}
	got <- total
}

// readRing is readPlain with the reads of one epoll_wait's ready links
// submitted as one batch.
func readRing(b *testing.B, ep, frameLen int, got chan<- int) {
	runtime.LockOSThread()
	r, err := uring.New(256)
	if err != nil {
		b.Error(err)
		got <- 0
		return
	}
	defer r.Close()
	events := make([]unix.EpollEvent, 256)
	bufs := make([][]byte, 256)
	for i := range bufs {
		bufs[i] = make([]byte, 4096)
	}
	var done []uring.Completion
	total := 0
	for total < b.N {
		n, err := unix.EpollWait(ep, events, 100)
		if err != nil && err != syscall.EINTR {
			break
		}
		for i, ev := range events[:max(n, 0)] {
			_ = r.Recv(int(ev.Fd), bufs[i], uint64(i))
		}
		if n <= 0 {
			continue
		}
		if _, err := r.Submit(n); err != nil {
			b.Error(err)
			break
		}
		done = r.Reap(done[:0])
		for _, c := range done {
			if c.Result > 0 {
				total += int(c.Result) / frameLen
			}
		}
	}
	got <- total
}

// writeRing sends the frames round robin, 128 writes per system call.
func writeRing(b *testing.B, senders []int, frame []byte) {
	r, err := uring.New(128)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	var done []uring.Completion
	inFlight := 0
	for i := range b.N {
		if err := r.Send(senders[i%len(senders)], frame, 0); err != nil {
			b.Fatal(err)
		}
		inFlight++
		if inFlight == 128 || i == b.N-1 {
			if _, err := r.Submit(inFlight); err != nil {
				b.Fatal(err)
			}
			done = r.Reap(done[:0])
			for _, c := range done {
				if c.Result != int32(len(frame)) {
					b.Fatalf("ring write: %d %v", c.Result, c.Err())
				}
			}
			inFlight -= len(done)
		}
	}
}
