package rtc

import (
	"bytes"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/pion/dtls/v3"
	"github.com/pion/webrtc/v4"

	"github.com/backchannel/backchannel/internal/udpbuf"
)

func TestListenSharesPortBetweenUDPAndTCP(t *testing.T) {
	tr, err := Listen(Config{ICEAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if tr.Addr().Port == 0 || tr.Addr().Port != tr.TCPAddr().Port {
		t.Fatalf("UDP %v and TCP %v differ", tr.Addr(), tr.TCPAddr())
	}
	// The shared socket's kernel buffers were grown (udpbuf).
	fresh, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	r0, s0 := udpbuf.Sizes(fresh)
	fresh.Close()
	if r, s := udpbuf.Sizes(tr.UDPConn()); r <= r0 || s <= s0 {
		t.Errorf("ICE socket buffers %d/%d, no larger than a fresh socket's %d/%d", r, s, r0, s0)
	}
	// The ports are really bound.
	if _, err := net.ListenUDP("udp4", tr.Addr()); err == nil {
		t.Fatal("UDP port not bound")
	}
	if _, err := net.ListenTCP("tcp4", tr.TCPAddr()); err == nil {
		t.Fatal("TCP port not bound")
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tr.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	// After Close the port is free again.
	l, err := net.ListenUDP("udp4", tr.Addr())
	if err != nil {
		t.Fatalf("port still bound after Close: %v", err)
	}
	l.Close()
}

func TestListenRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{ICEAddr: "nonsense"},
		{ICEAddr: "127.0.0.1:99999"},
		{ICEAddr: "127.0.0.1:0", PublicIPs: []string{"not-an-ip"}},
	} {
		if tr, err := Listen(cfg); err == nil {
			tr.Close()
			t.Errorf("Listen(%+v) succeeded", cfg)
		}
	}
	// A port already taken for UDP is an error, not a silent move.
	first, err := Listen(Config{ICEAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if tr, err := Listen(Config{ICEAddr: first.Addr().String()}); err == nil {
		tr.Close()
		t.Fatal("second Listen on the same port succeeded")
	}
}

// gatherOffer lists the candidates a peer connection built on the
// transport announces.
func gatherOffer(t *testing.T, tr *Transport) string {
	t.Helper()
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	api := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(tr.SettingEngine()))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo); err != nil {
		t.Fatal(err)
	}
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	done := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	<-done
	return pc.LocalDescription().SDP
}

func TestCandidatesUseTheMuxPort(t *testing.T) {
	tr, err := Listen(Config{ICEAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	sdp := gatherOffer(t, tr)
	port := tr.Addr().Port
	var udp, tcp bool
	for _, line := range strings.Split(sdp, "\r\n") {
		if !strings.HasPrefix(line, "a=candidate:") {
			continue
		}
		f := strings.Fields(line)
		if f[4] != "127.0.0.1" || f[5] != itoa(port) {
			t.Fatalf("candidate not on the mux: %s", line)
		}
		switch strings.ToLower(f[2]) {
		case "udp":
			udp = true
		case "tcp":
			tcp = true
			if !strings.Contains(line, "tcptype passive") {
				t.Fatalf("TCP candidate not passive: %s", line)
			}
		}
		if strings.Contains(line, ".local") {
			t.Fatalf("mDNS candidate: %s", line)
		}
	}
	if !udp || !tcp {
		t.Fatalf("want UDP and TCP host candidates on loopback:\n%s", sdp)
	}
}

func TestPublicIPsReplaceHostAddresses(t *testing.T) {
	tr, err := Listen(Config{ICEAddr: "127.0.0.1:0", PublicIPs: []string{"203.0.113.7"}})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	sdp := gatherOffer(t, tr)
	if !strings.Contains(sdp, " 203.0.113.7 "+itoa(tr.Addr().Port)+" typ host") {
		t.Fatalf("public IP not announced:\n%s", sdp)
	}
	if strings.Contains(sdp, " 127.0.0.1 ") {
		t.Fatalf("private address still announced:\n%s", sdp)
	}
	if got := tr.PublicIPs(); len(got) != 1 || got[0] != "203.0.113.7" {
		t.Fatalf("PublicIPs = %v", got)
	}
}

func TestICEServersAreCopied(t *testing.T) {
	servers := []webrtc.ICEServer{{URLs: []string{"stun:a"}}}
	tr, err := Listen(Config{ICEAddr: "127.0.0.1:0", ICEServers: servers})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	got := tr.ICEServers()
	got[0] = webrtc.ICEServer{}
	if tr.ICEServers()[0].URLs[0] != "stun:a" {
		t.Fatal("ICEServers exposes internal state")
	}
}

func TestSRTPProfilesPreferGCM(t *testing.T) {
	p := PreferredSRTPProfiles()
	if len(p) < 2 || p[0] != dtls.SRTP_AEAD_AES_128_GCM || p[1] != dtls.SRTP_AES128_CM_HMAC_SHA1_80 {
		t.Fatalf("profiles %v", p)
	}
}

func TestLoggerFactoryShiftsLevels(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	lg := LoggerFactory(l).NewLogger("ice")
	lg.Infof("chatty %d", 1)
	lg.Debug("quiet")
	lg.Trace("silent")
	lg.Warnf("remote did %s", "something")
	lg.Errorf("failed %d", 2)
	out := buf.String()
	if strings.Contains(out, "chatty") || strings.Contains(out, "quiet") || strings.Contains(out, "silent") {
		t.Fatalf("pion info/debug leaked at slog info:\n%s", out)
	}
	if !strings.Contains(out, "level=INFO msg=\"remote did something\" pion=ice") ||
		!strings.Contains(out, "level=WARN msg=\"failed 2\"") {
		t.Fatalf("warn/error not shifted:\n%s", out)
	}
	LoggerFactory(nil).NewLogger("x").Error("no panic with a nil logger")
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestDualStackListenAnnouncesEveryInterfaceIncludingLoopback(t *testing.T) {
	tr, err := Listen(Config{ICEAddr: ":0"})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	sdp := gatherOffer(t, tr)
	port := itoa(tr.Addr().Port)
	if !strings.Contains(sdp, " 127.0.0.1 "+port+" typ host") {
		t.Fatalf("no loopback candidate on the mux port:\n%s", sdp)
	}
	for _, line := range strings.Split(sdp, "\r\n") {
		if strings.HasPrefix(line, "a=candidate:") && strings.Fields(line)[5] != port {
			t.Fatalf("candidate off the mux port: %s", line)
		}
	}
}
