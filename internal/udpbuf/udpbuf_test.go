package udpbuf_test

import (
	"net"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/backchannel/backchannel/internal/udpbuf"
)

// Grow gets the asked size when the process may exceed the sysctl caps,
// else as much as they allow; a fresh socket has far less.
func TestGrow(t *testing.T) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rcv0, snd0 := udpbuf.Sizes(conn)
	if rcv0 <= 0 || snd0 <= 0 {
		t.Fatalf("fresh socket: %d %d", rcv0, snd0)
	}
	rcv, snd := udpbuf.Grow(conn, udpbuf.DefaultBytes)
	if r, s := udpbuf.Sizes(conn); r != rcv || s != snd {
		t.Fatalf("Grow reported %d/%d, Sizes %d/%d", rcv, snd, r, s)
	}
	for _, b := range []struct {
		name        string
		before, got int
		sysctl      string
	}{{"receive", rcv0, rcv, "rmem_max"}, {"send", snd0, snd, "wmem_max"}} {
		raw, err := os.ReadFile("/proc/sys/net/core/" + b.sysctl)
		if err != nil {
			t.Fatal(err)
		}
		limit, _ := strconv.Atoi(strings.TrimSpace(string(raw)))
		want := min(udpbuf.DefaultBytes, limit)
		if hasNetAdmin(t) {
			want = udpbuf.DefaultBytes
		}
		if b.got < want || (want > b.before && b.got <= b.before) {
			t.Errorf("%s buffer %d bytes (was %d), want at least %d (%s %d)", b.name, b.got, b.before, want, b.sysctl, limit)
		}
	}
}

// hasNetAdmin reports whether this process holds CAP_NET_ADMIN (bit 12 of
// its effective capabilities).
func hasNetAdmin(t *testing.T) bool {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return caps&(1<<12) != 0
		}
	}
	t.Fatal("no CapEff in /proc/self/status")
	return false
}
