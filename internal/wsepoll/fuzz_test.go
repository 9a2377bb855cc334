//go:build linux

package wsepoll

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"
)

// FuzzParseHeader: no input makes the header parser panic or claim more
// than it was given, and what it accepts obeys the limits.
func FuzzParseHeader(f *testing.F) {
	f.Add([]byte{0x81, 0x85, 1, 2, 3, 4, 'h', 'e', 'l', 'l', 'o'})
	f.Add([]byte{0x81, 0xfe, 0x01, 0x00, 1, 2, 3, 4})
	f.Add([]byte{0x82, 0xff, 0, 0, 0, 0, 0, 0, 0x40, 0, 1, 2, 3, 4})
	f.Add([]byte{0x89, 0x80, 0, 0, 0, 0})
	f.Add([]byte{0x01, 0x81})
	f.Add([]byte{0xf1, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, err := parseHeader(b, 1024)
		if err != nil || n == 0 {
			return
		}
		if n > len(b) || n > maxHeader {
			t.Fatalf("header size %d of %d bytes", n, len(b))
		}
		if h.length > 1024 || h.length < 0 {
			t.Fatalf("accepted length %d", h.length)
		}
		if h.op >= opClose && (!h.fin || h.length > 125) {
			t.Fatal("accepted a bad control frame")
		}
	})
}

// countingHandler counts what a fuzzed connection delivers.
type countingHandler struct{ msgs [][]byte }

func (h *countingHandler) OnMessage(_ *Conn, _ bool, data []byte) {
	h.msgs = append(h.msgs, append([]byte(nil), data...))
}
func (h *countingHandler) OnClose(*Conn, CloseInfo) {}

// FuzzConsume feeds arbitrary bytes, split at an arbitrary point, to a
// connection's frame decoder: it must never panic, and a stream of valid
// frames must come out the same however it is split.
func FuzzConsume(f *testing.F) {
	valid := append(clientFrame(opText, false, []byte("hel"), testMask), clientFrame(opPing, true, []byte("x"), testMask)...)
	valid = append(valid, clientFrame(opContinuation, true, []byte("lo"), testMask)...)
	valid = append(valid, clientFrame(opText, true, bytes.Repeat([]byte("é"), 100), testMask)...)
	f.Add(valid, uint16(3))
	f.Add([]byte{0x81, 0x85, 1, 2, 3, 4, 'h', 'e', 'l', 'l', 'o'}, uint16(1))
	f.Add([]byte{0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8}, uint16(0))
	f.Add([]byte{0x81, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, uint16(5))
	f.Fuzz(func(t *testing.T, data []byte, split uint16) {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Skip(err)
		}
		defer unix.Close(fds[1])
		tr := &Transport{cfg: Config{MaxMessage: 4096, QueueSoft: 4, QueueHard: 8, CloseTimeout: 1, WriteTimeout: 1}}
		p := &poller{t: tr, evfd: -1, conns: map[uint64]*Conn{}, watched: map[*Conn]struct{}{}, closed: true}
		h := &countingHandler{}
		c := &Conn{p: p, id: 1, fd: fds[0], h: h}
		defer unix.Close(fds[0])
		// consume unmasks in place, as it does in the poller's buffer.
		first, second := bytes.Clone(data), bytes.Clone(data)
		cut := int(split) % (len(data) + 1)
		if c.consume(first[:cut], 1) {
			c.consume(first[cut:], 2)
		}
		whole := &countingHandler{}
		c2 := &Conn{p: p, id: 2, fd: fds[0], h: whole}
		c2.consume(second, 1)
		if c.state == stateOpen && c2.state == stateOpen && len(h.msgs) != len(whole.msgs) {
			t.Fatalf("split at %d gave %d messages, whole %d", cut, len(h.msgs), len(whole.msgs))
		}
		for i := range min(len(h.msgs), len(whole.msgs)) {
			if !bytes.Equal(h.msgs[i], whole.msgs[i]) {
				t.Fatalf("message %d differs when split", i)
			}
		}
	})
}
