package rtpseq

import (
	"testing"

	"github.com/pion/rtp"
)

func push(r *Reorderer, seqs ...uint16) (out []uint16, lost []int) {
	for _, s := range seqs {
		for _, d := range r.Push(&rtp.Packet{Header: rtp.Header{SequenceNumber: s}}, nil) {
			out = append(out, d.Packet.SequenceNumber)
			lost = append(lost, d.Lost)
		}
	}
	return out, lost
}

func equal(a, b []uint16) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestReorderer(t *testing.T) {
	// Reordering within the window, across the 16-bit wrap.
	r := NewReorderer(4)
	out, lost := push(r, 65533, 65535, 65534, 1, 0, 2)
	if !equal(out, []uint16{65533, 65534, 65535, 0, 1, 2}) || lost[5] != 0 {
		t.Fatalf("out %v lost %v", out, lost)
	}
	// A gap is given up once the window fills; the late packet is dropped.
	out, lost = push(r, 4, 5, 6, 7, 3)
	if !equal(out, []uint16{4, 5, 6, 7}) || lost[0] != 1 || r.Late != 1 {
		t.Fatalf("out %v lost %v late %d", out, lost, r.Late)
	}
	// A jump beyond the window releases at once with the count lost.
	out, lost = push(r, 20)
	if !equal(out, []uint16{20}) || lost[0] != 12 {
		t.Fatalf("jump: out %v lost %v", out, lost)
	}
	// Duplicates, of released and of waiting packets.
	out, _ = push(r, 20, 22, 22, 21)
	if !equal(out, []uint16{21, 22}) || r.Late != 3 {
		t.Fatalf("duplicates: out %v late %d", out, r.Late)
	}
	// A sender restart far behind resynchronises.
	out, lost = push(r, 5000, 5001, 100, 101)
	if !equal(out, []uint16{5000, 5001, 100, 101}) || lost[2] != 1 {
		t.Fatalf("restart: out %v lost %v", out, lost)
	}
	// Without a window every gap is lost at once.
	r = NewReorderer(0)
	out, lost = push(r, 1, 3, 2, 4)
	if !equal(out, []uint16{1, 3, 4}) || lost[1] != 1 || r.Late != 1 {
		t.Fatalf("no window: out %v lost %v", out, lost)
	}
}

func TestReordererWindowMemory(t *testing.T) {
	r := NewReorderer(8)
	// Every other packet missing: memory stays at the window.
	for i := range 1000 {
		r.Push(&rtp.Packet{Header: rtp.Header{SequenceNumber: uint16(2 * i)}}, nil)
		if r.waiting > 8 {
			t.Fatalf("%d packets waiting", r.waiting)
		}
	}
}

func TestUnwrapper(t *testing.T) {
	var u Unwrapper
	for _, c := range []struct {
		ts   uint32
		want int64
	}{{4294967000, 4294967000}, {100, 4294967396}, {4294967200, 4294967200}, {3000, 4294970296}} {
		if got := u.Unwrap(c.ts); got != c.want {
			t.Fatalf("Unwrap(%d) = %d, want %d", c.ts, got, c.want)
		}
	}
}
