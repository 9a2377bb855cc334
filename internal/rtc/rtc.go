// Package rtc owns the process's WebRTC transport: the single ICE UDP mux port
// (with ICE-TCP on the same port number), 1:1 NAT addresses and the ICE
// servers handed to clients. Ingest (WHIP) and edge (WHEP) both build their
// peer connections from it so every WebRTC session shares one port.
//
// It also holds what the WHIP and WHEP HTTP servers share: SDP offer
// inspection, CORS, Link headers for ICE servers and body limits.
package rtc

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"

	"github.com/backchannel/backchannel/internal/udpbuf"
)

// Config configures the shared transport.
type Config struct {
	// ICEAddr is the UDP address of the ICE mux; ICE-TCP listens on the same
	// port number. ":8189" by default; port 0 picks a free port.
	ICEAddr string
	// PublicIPs are announced instead of the host's own addresses (1:1 NAT).
	PublicIPs []string
	// ICEServers (STUN/TURN) are advertised to clients in WHIP/WHEP Link headers.
	ICEServers []webrtc.ICEServer
	Logger     *slog.Logger
}

// DefaultICEAddr is where the ICE mux listens when Config.ICEAddr is empty.
const DefaultICEAddr = ":8189"

// ICE timeouts: a publisher or viewer whose network vanished is declared
// failed after about ten seconds, so a stream goes offline (or a viewer slot
// is freed) promptly instead of after pion's 25 s default.
const (
	iceDisconnectedTimeout = 4 * time.Second
	iceFailedTimeout       = 10 * time.Second
	iceKeepalive           = 2 * time.Second
)

// Transport is the shared ICE UDP mux and ICE-TCP listener. Build peer
// connections with an API whose SettingEngine comes from SettingEngine().
type Transport struct {
	cfg    Config
	log    *slog.Logger
	udp    *net.UDPConn
	tcp    *net.TCPListener
	udpMux ice.UDPMux
	tcpMux ice.TCPMux

	closeOnce sync.Once
	closeErr  error
}

// Listen opens the ICE UDP mux socket and the ICE-TCP listener on the same
// port number.
func Listen(cfg Config) (*Transport, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	addr := cfg.ICEAddr
	if addr == "" {
		addr = DefaultICEAddr
	}
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("rtc: ICE address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("rtc: ICE address %q: bad port", addr)
	}
	for _, ip := range cfg.PublicIPs {
		if net.ParseIP(ip) == nil {
			return nil, fmt.Errorf("rtc: public IP %q is not an IP address", ip)
		}
	}
	udpNet, tcpNet := "udp", "tcp"
	if ip := net.ParseIP(host); ip != nil && ip.To4() != nil {
		// An IPv4 literal (including 0.0.0.0) means IPv4 only; otherwise
		// the socket is dual-stack and the mux unmaps IPv4 peers itself.
		udpNet, tcpNet = "udp4", "tcp4"
	}

	udp, tcp, err := listenPair(udpNet, tcpNet, host, port)
	if err != nil {
		return nil, err
	}
	logger := cfg.Logger.With("component", "rtc")
	rcv, snd := udpbuf.Grow(udp, udpbuf.DefaultBytes)
	lf := LoggerFactory(cfg.Logger)
	t := &Transport{
		cfg:    cfg,
		log:    logger,
		udp:    udp,
		tcp:    tcp,
		udpMux: webrtc.NewICEUDPMux(lf.NewLogger("ice-udp"), udp),
		tcpMux: webrtc.NewICETCPMux(lf.NewLogger("ice-tcp"), tcp, 64),
	}
	logger.Info("ICE transport listening", "udp", udp.LocalAddr().String(), "tcp", tcp.Addr().String(),
		"public_ips", strings.Join(cfg.PublicIPs, ","))
	if rcv < udpbuf.DefaultBytes || snd < udpbuf.DefaultBytes {
		logger.Info("ICE UDP socket buffers are smaller than asked for; raise net.core.rmem_max and net.core.wmem_max (or grant CAP_NET_ADMIN)",
			"receive_bytes", rcv, "send_bytes", snd, "wanted_bytes", udpbuf.DefaultBytes)
	}
	return t, nil
}

// listenPair binds UDP and TCP on the same port. With port 0 the kernel picks
// the UDP port and TCP may find it taken; a few fresh picks settle that.
func listenPair(udpNet, tcpNet, host string, port int) (*net.UDPConn, *net.TCPListener, error) {
	attempts := 1
	if port == 0 {
		attempts = 20
	}
	var lastErr error
	for range attempts {
		uaddr, err := net.ResolveUDPAddr(udpNet, net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return nil, nil, fmt.Errorf("rtc: %w", err)
		}
		udp, err := net.ListenUDP(udpNet, uaddr)
		if err != nil {
			return nil, nil, fmt.Errorf("rtc: ICE UDP listen: %w", err)
		}
		bound := udp.LocalAddr().(*net.UDPAddr).Port
		taddr, err := net.ResolveTCPAddr(tcpNet, net.JoinHostPort(host, strconv.Itoa(bound)))
		if err != nil {
			_ = udp.Close()
			return nil, nil, fmt.Errorf("rtc: %w", err)
		}
		tcp, err := net.ListenTCP(tcpNet, taddr)
		if err == nil {
			return udp, tcp, nil
		}
		_ = udp.Close()
		lastErr = err
	}
	return nil, nil, fmt.Errorf("rtc: ICE TCP listen on the UDP port: %w", lastErr)
}

// Addr is the bound UDP address of the ICE mux.
func (t *Transport) Addr() *net.UDPAddr { return t.udp.LocalAddr().(*net.UDPAddr) }

// UDPConn is the ICE UDP mux socket itself, for senders that write
// already-protected media straight to it, batched (the WHEP fan-out); ICE,
// DTLS and RTCP keep going through the mux.
func (t *Transport) UDPConn() *net.UDPConn { return t.udp }

// TCPAddr is the bound address of the ICE-TCP listener (same port as Addr).
func (t *Transport) TCPAddr() *net.TCPAddr { return t.tcp.Addr().(*net.TCPAddr) }

// ICEServers are the STUN/TURN servers clients should use; WHIP and WHEP
// advertise them in Link headers.
func (t *Transport) ICEServers() []webrtc.ICEServer {
	out := make([]webrtc.ICEServer, len(t.cfg.ICEServers))
	copy(out, t.cfg.ICEServers)
	return out
}

// PublicIPs are the 1:1 NAT addresses announced in host candidates.
func (t *Transport) PublicIPs() []string { return append([]string(nil), t.cfg.PublicIPs...) }

// SettingEngine returns settings that put a peer connection on the shared
// mux: host candidates on the mux port (loopback included, public IPs
// substituted when configured), passive ICE-TCP on the same port, mDNS off
// (browsers' .local candidates cannot be resolved here; their
// peer-reflexive candidates are used instead) and AES-GCM SRTP preferred.
func (t *Transport) SettingEngine() webrtc.SettingEngine {
	var se webrtc.SettingEngine
	se.LoggerFactory = LoggerFactory(t.cfg.Logger)
	se.SetICEUDPMux(t.udpMux)
	se.SetICETCPMux(t.tcpMux)
	se.SetNetworkTypes([]webrtc.NetworkType{
		webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6,
		webrtc.NetworkTypeTCP4, webrtc.NetworkTypeTCP6,
	})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetIncludeLoopbackCandidate(true)
	// We never dial out over TCP: the server side is passive only.
	se.DisableActiveTCP(true)
	se.SetICETimeouts(iceDisconnectedTimeout, iceFailedTimeout, iceKeepalive)
	se.SetSRTPProtectionProfiles(PreferredSRTPProfiles()...)
	if len(t.cfg.PublicIPs) > 0 {
		// Host mode replaces the private address in host candidates; that
		// only fails on an empty list, which we have ruled out.
		_ = se.SetICEAddressRewriteRules(webrtc.ICEAddressRewriteRule{
			External:        append([]string(nil), t.cfg.PublicIPs...),
			AsCandidateType: webrtc.ICECandidateTypeHost,
			Mode:            webrtc.ICEAddressRewriteReplace,
		})
	}
	return se
}

// PreferredSRTPProfiles lists the SRTP protection profiles in the order we
// offer them: AEAD AES-128-GCM first (cheaper per packet on CPUs with AES-NI
// and authenticated by construction), then the mandatory-to-implement
// AES-CM-HMAC-SHA1-80.
func PreferredSRTPProfiles() []dtls.SRTPProtectionProfile {
	return []dtls.SRTPProtectionProfile{
		dtls.SRTP_AEAD_AES_128_GCM,
		dtls.SRTP_AES128_CM_HMAC_SHA1_80,
	}
}

// Close stops the mux and the TCP listener. Peer connections using them
// should be closed first.
func (t *Transport) Close() error {
	t.closeOnce.Do(func() {
		// Closing the muxes closes the sockets they own.
		t.closeErr = errors.Join(t.udpMux.Close(), t.tcpMux.Close())
		_ = t.udp.Close()
		_ = t.tcp.Close()
	})
	return t.closeErr
}
