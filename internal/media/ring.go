package media

import (
	"sync"

	"github.com/pion/rtp"
)

// Packet is one outgoing RTP packet of a track: the munged header (stream
// SSRC, continuous sequence number and timestamp, no header extensions,
// which are negotiated per peer) and the publisher's payload, untouched.
// Sinks get a *Packet that stays valid only during the call and must treat
// it as read-only.
type Packet struct {
	Header  rtp.Header
	Payload []byte
	// Keyframe marks a packet where a decoder can start: the first packet
	// of a keyframe's access unit (for H.264 the one carrying the SPS).
	Keyframe bool
	// CatchUp marks a packet replayed from the GOP cache to one sink
	// joining mid-GOP (Track.AddSinkFromKeyframe); its timestamp is that
	// sink's own, not the track's.
	CatchUp bool
}

// Ring keeps the most recent outgoing packets of a track, indexed by their
// outgoing sequence number, so one copy serves NACK retransmissions to
// every viewer. Slots own their payload buffers and are reused, so steady
// state costs one copy per packet and no allocation.
type Ring struct {
	mu    sync.RWMutex
	slots []ringSlot
	mask  uint16
}

type ringSlot struct {
	pkt   Packet
	buf   []byte
	valid bool
}

// Default ring sizes: about five seconds of 2 Mbit/s video, and a second or
// more of audio (browsers do not NACK audio; the ring still feeds late
// joiners' retransmissions and a future GOP cache).
const (
	DefaultVideoRingSize = 1024
	DefaultAudioRingSize = 128
)

// NewRing returns a ring of size slots, rounded up to a power of two between
// 1 and 32768 (half the sequence space, so lookups are never ambiguous).
func NewRing(size int) *Ring {
	n := 1
	for n < size && n < 1<<15 {
		n <<= 1
	}
	return &Ring{slots: make([]ringSlot, n), mask: uint16(n - 1)}
}

// Size is the number of slots.
func (r *Ring) Size() int { return len(r.slots) }

// Put stores a copy of the packet in the slot of its sequence number and
// returns the stored packet. A packet older than the one already in its
// slot is not stored (it would evict a newer one): Put returns nil.
// Only one goroutine may call Put at a time; the returned packet stays
// valid until that goroutine's next Put.
func (r *Ring) Put(h *rtp.Header, payload []byte, keyframe bool) *Packet {
	slot := &r.slots[h.SequenceNumber&r.mask]
	r.mu.Lock()
	if slot.valid && int16(h.SequenceNumber-slot.pkt.Header.SequenceNumber) < 0 {
		r.mu.Unlock()
		return nil
	}
	slot.buf = append(slot.buf[:0], payload...)
	slot.pkt.Header = *h
	slot.pkt.Payload = slot.buf
	slot.pkt.Keyframe = keyframe
	slot.valid = true
	r.mu.Unlock()
	return &slot.pkt
}

// Get calls fn with the stored packet of sequence number seq and reports
// whether it was there. fn runs under the ring's read lock: it must not
// retain the packet and should be quick (one write to one peer).
func (r *Ring) Get(seq uint16, fn func(*Packet)) bool {
	slot := &r.slots[seq&r.mask]
	r.mu.RLock()
	defer r.mu.RUnlock()
	if !slot.valid || slot.pkt.Header.SequenceNumber != seq {
		return false
	}
	fn(&slot.pkt)
	return true
}
