// Package udpbuf sizes the kernel buffers of the servers' shared UDP
// sockets (the ICE mux, the RTSP RTP/RTCP pair). One socket carries every
// session's packets there, so a burst, or the reading goroutine waiting a
// moment for a CPU, must not overflow the ~200 KB a socket gets by
// default: a datagram dropped by the kernel costs a NACK round trip at
// best, and a stream's first packet cannot be asked for again.
package udpbuf

import (
	"net"
	"syscall"
)

// DefaultBytes is what the servers ask for, each way.
const DefaultBytes = 8 << 20

// Grow asks for size-byte receive and send buffers on conn, past the
// sysctl caps (net.core.rmem_max, wmem_max) when the process holds
// CAP_NET_ADMIN, else up to them. It returns what conn got (Sizes).
func Grow(conn *net.UDPConn, size int) (receive, send int) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return 0, 0
	}
	_ = raw.Control(func(fd uintptr) {
		for _, o := range [][2]int{{syscall.SO_RCVBUFFORCE, syscall.SO_RCVBUF}, {syscall.SO_SNDBUFFORCE, syscall.SO_SNDBUF}} {
			if syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, o[0], size) != nil {
				_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, o[1], size)
			}
		}
	})
	return Sizes(conn)
}

// Sizes is conn's usable receive and send buffer (Linux reports twice
// what it grants, for its own bookkeeping).
func Sizes(conn *net.UDPConn) (receive, send int) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return 0, 0
	}
	_ = raw.Control(func(fd uintptr) {
		r, _ := syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF)
		s, _ := syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF)
		receive, send = r/2, s/2
	})
	return receive, send
}
