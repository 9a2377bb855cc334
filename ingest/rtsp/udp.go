package rtsp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"

	"github.com/backchannel/backchannel/internal/udpbuf"
)

// udpHandler receives the datagrams of one registered source address.
// Calls come from the socket's read goroutine; b is the handler's own.
type udpHandler func(b []byte)

// udpPair is the server's RTP and RTCP sockets for UDP transport (RTP on
// an even port, RTCP on the next), shared by every session: datagrams are
// routed by their source address, which SETUP declared (client_port) and
// the RTSP connection's address confirms.
type udpPair struct {
	rtp, rtcp *net.UDPConn

	mu     sync.RWMutex
	routes [2]map[netip.AddrPort]udpRoute // by socket: 0 RTP, 1 RTCP
	nextID uint64

	dropped func() // counts a datagram from nobody
	wg      sync.WaitGroup
}

// listenUDPPair binds the pair. With port 0 in addr it finds a free even
// port whose successor is free too.
func listenUDPPair(addr string) (*udpPair, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("rtsp: UDP address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65534 {
		return nil, fmt.Errorf("rtsp: UDP port %q", portStr)
	}
	bind := func(p int) (*net.UDPConn, error) {
		a, err := net.ResolveUDPAddr("udp", net.JoinHostPort(host, strconv.Itoa(p)))
		if err != nil {
			return nil, err
		}
		return net.ListenUDP("udp", a)
	}
	if port != 0 {
		if port%2 != 0 {
			return nil, fmt.Errorf("rtsp: the RTP port must be even, got %d", port)
		}
		r, err := bind(port)
		if err != nil {
			return nil, fmt.Errorf("rtsp: RTP port: %w", err)
		}
		c, err := bind(port + 1)
		if err != nil {
			r.Close()
			return nil, fmt.Errorf("rtsp: RTCP port: %w", err)
		}
		return newUDPPair(r, c), nil
	}
	for range 64 {
		r, err := bind(0)
		if err != nil {
			return nil, fmt.Errorf("rtsp: RTP port: %w", err)
		}
		p := r.LocalAddr().(*net.UDPAddr).Port
		if p%2 != 0 || p == 65534 {
			r.Close()
			continue
		}
		c, err := bind(p + 1)
		if err != nil {
			r.Close()
			continue
		}
		return newUDPPair(r, c), nil
	}
	return nil, errors.New("rtsp: no free pair of UDP ports")
}

func newUDPPair(r, c *net.UDPConn) *udpPair {
	udpbuf.Grow(r, udpbuf.DefaultBytes) // every UDP publisher's media
	u := &udpPair{rtp: r, rtcp: c}
	u.routes[0] = map[netip.AddrPort]udpRoute{}
	u.routes[1] = map[netip.AddrPort]udpRoute{}
	return u
}

// ports returns the RTP and RTCP port numbers.
func (u *udpPair) ports() (int, int) {
	return u.rtp.LocalAddr().(*net.UDPAddr).Port, u.rtcp.LocalAddr().(*net.UDPAddr).Port
}

func (u *udpPair) start() {
	u.wg.Add(2)
	go u.read(u.rtp, 0)
	go u.read(u.rtcp, 1)
}

func (u *udpPair) read(c *net.UDPConn, idx int) {
	defer u.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		u.mu.RLock()
		h := u.routes[idx][from].h
		u.mu.RUnlock()
		if h == nil {
			if u.dropped != nil {
				u.dropped()
			}
			continue
		}
		h(append([]byte(nil), buf[:n]...))
	}
}

// route sends datagrams from addr on socket idx (0 RTP, 1 RTCP) to h, and
// returns the function that stops it. A later route for the same address
// replaces an earlier one.
func (u *udpPair) route(idx int, addr netip.AddrPort, h udpHandler) (remove func()) {
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	u.mu.Lock()
	u.nextID++
	id := u.nextID
	u.routes[idx][addr] = udpRoute{id: id, h: h}
	u.mu.Unlock()
	return func() {
		u.mu.Lock()
		if u.routes[idx][addr].id == id {
			delete(u.routes[idx], addr)
		}
		u.mu.Unlock()
	}
}

type udpRoute struct {
	id uint64
	h  udpHandler
}

// send writes a datagram from socket idx.
func (u *udpPair) send(idx int, b []byte, to netip.AddrPort) error {
	c := u.rtp
	if idx == 1 {
		c = u.rtcp
	}
	_, err := c.WriteToUDPAddrPort(b, to)
	return err
}

func (u *udpPair) close() {
	u.rtp.Close()
	u.rtcp.Close()
	u.wg.Wait()
}
