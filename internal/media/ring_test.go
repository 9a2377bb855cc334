package media

import (
	"bytes"
	"testing"

	"github.com/pion/rtp"
)

func TestRingStoresAndFindsBySequence(t *testing.T) {
	r := NewRing(100) // rounds to 128
	if r.Size() != 128 {
		t.Fatalf("size = %d, want 128", r.Size())
	}
	for i := range 300 {
		h := rtp.Header{SequenceNumber: uint16(65400 + i), Timestamp: uint32(i)}
		p := r.Put(&h, []byte{byte(i), byte(i >> 8)}, i%50 == 0)
		if p == nil || p.Header.SequenceNumber != h.SequenceNumber {
			t.Fatalf("Put %d returned %+v", i, p)
		}
	}
	// The last 128 (wrapping through 65535 → 0) are there, older ones gone.
	for i := 300 - 128; i < 300; i++ {
		seq := uint16(65400) + uint16(i)
		found := r.Get(seq, func(p *Packet) {
			if !bytes.Equal(p.Payload, []byte{byte(i), byte(i >> 8)}) || p.Header.Timestamp != uint32(i) {
				t.Errorf("seq %d: got payload %v ts %d", seq, p.Payload, p.Header.Timestamp)
			}
			if p.Keyframe != (i%50 == 0) {
				t.Errorf("seq %d: keyframe flag %v", seq, p.Keyframe)
			}
		})
		if !found {
			t.Fatalf("seq %d missing", seq)
		}
	}
	base := uint16(65400)
	if r.Get(base+300-129, func(*Packet) {}) {
		t.Fatal("evicted packet still found")
	}
	if r.Get(base+300, func(*Packet) {}) {
		t.Fatal("future packet found")
	}
}

func TestRingCopiesPayload(t *testing.T) {
	r := NewRing(4)
	buf := []byte{1, 2, 3}
	h := rtp.Header{SequenceNumber: 9}
	r.Put(&h, buf, false)
	buf[0] = 99
	r.Get(9, func(p *Packet) {
		if p.Payload[0] != 1 {
			t.Fatal("ring aliases the caller's buffer")
		}
	})
}

func TestRingKeepsNewerPacketOverLateOlderOne(t *testing.T) {
	r := NewRing(4)
	newer := rtp.Header{SequenceNumber: 10}
	r.Put(&newer, []byte{10}, false)
	older := rtp.Header{SequenceNumber: 6} // same slot (6 & 3 == 10 & 3)
	if p := r.Put(&older, []byte{6}, false); p != nil {
		t.Fatal("older packet evicted a newer one")
	}
	if !r.Get(10, func(p *Packet) {}) {
		t.Fatal("newer packet lost")
	}
}

func TestRingSizeBounds(t *testing.T) {
	if got := NewRing(0).Size(); got != 1 {
		t.Fatalf("NewRing(0).Size() = %d", got)
	}
	if got := NewRing(1 << 20).Size(); got != 1<<15 {
		t.Fatalf("NewRing(huge).Size() = %d, want 32768", got)
	}
}

func BenchmarkRingPut(b *testing.B) {
	r := NewRing(DefaultVideoRingSize)
	payload := make([]byte, 1200)
	var h rtp.Header
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		h.SequenceNumber = uint16(i)
		r.Put(&h, payload, false)
	}
}
