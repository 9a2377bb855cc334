//go:build linux

package votebench

import (
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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
// live in it) per frame.
func BenchmarkLoopbackFloor(b *testing.B) {
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
	go func() {
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
						total += m / len(frame)
					}
					if err != nil || m < len(buf) {
						break
					}
				}
			}
		}
		got <- total
	}()

	var before, after unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &before)
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		if _, err := unix.Write(senders[i%links], frame); err != nil {
			b.Fatal(err)
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
