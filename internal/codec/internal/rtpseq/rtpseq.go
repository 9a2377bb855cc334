// Package rtpseq restores RTP sequence order within a bounded window and
// extends 32-bit RTP timestamps to 64 bits. The depacketizers of the codec
// packages share it, so loss and reordering are handled one way everywhere.
package rtpseq

import "github.com/pion/rtp"

// Delivery is a packet released in sequence order. Lost counts the packets
// declared lost immediately before it (0 when it follows its predecessor).
type Delivery struct {
	Packet *rtp.Packet
	Lost   int
}

// Reorderer releases packets in sequence-number order. A packet that
// arrives early waits until the missing ones arrive or until Window later
// packets are waiting, at which point the missing ones are declared lost.
// A packet older than the last released one is dropped as late or
// duplicate. Memory is bounded by Window packets.
type Reorderer struct {
	window  int
	started bool
	next    uint16 // sequence number expected next
	slots   []*rtp.Packet
	waiting int
	// Late counts packets dropped because they arrived after their
	// position had been released or declared lost, and duplicates.
	Late uint64
}

// resyncDistance is how far a sequence number may jump, backwards, before
// the reorderer assumes the sender restarted rather than a stale packet.
const resyncDistance = 1000

// NewReorderer returns a reorderer holding at most window early packets;
// window <= 0 releases every packet at once and declares every gap lost.
func NewReorderer(window int) *Reorderer {
	if window < 0 {
		window = 0
	}
	// The slot count divides 2^16 so slot positions survive the sequence
	// number wrapping, and exceeds window so next..next+window never collide.
	n := 1
	for n <= window {
		n <<= 1
	}
	return &Reorderer{window: window, slots: make([]*rtp.Packet, n)}
}

// Push adds one packet and appends the packets it releases to out.
func (r *Reorderer) Push(pkt *rtp.Packet, out []Delivery) []Delivery {
	if !r.started {
		r.started = true
		r.next = pkt.SequenceNumber + 1
		return append(out, Delivery{Packet: pkt})
	}
	diff := int(int16(pkt.SequenceNumber - r.next))
	switch {
	case diff == 0:
		out = append(out, Delivery{Packet: pkt})
		r.next++
		return r.drain(out, 0)
	case diff < 0:
		if diff > -resyncDistance {
			r.Late++
			return out
		}
		// The sender restarted its sequence: release what waits, then
		// continue from this packet.
		out = r.flush(out)
		r.next = pkt.SequenceNumber + 1
		return append(out, Delivery{Packet: pkt, Lost: 1}) // a discontinuity, count unknown
	}
	if diff > r.window || r.window == 0 {
		// Too far ahead to wait for the gap: release everything up to it.
		out = r.flush(out)
		lost := int(uint16(pkt.SequenceNumber - r.next))
		r.next = pkt.SequenceNumber + 1
		return append(out, Delivery{Packet: pkt, Lost: lost})
	}
	slot := int(pkt.SequenceNumber) & (len(r.slots) - 1)
	if r.slots[slot] != nil {
		r.Late++ // duplicate of a waiting packet
		return out
	}
	r.slots[slot] = pkt
	r.waiting++
	if r.waiting < r.window {
		return out
	}
	// The window is full: give up on the oldest gap.
	return r.drain(out, 1)
}

// drain releases waiting packets in order. It skips over up to allowGaps
// missing positions' runs before stopping at the next hole.
func (r *Reorderer) drain(out []Delivery, allowGaps int) []Delivery {
	lost := 0
	for r.waiting > 0 {
		slot := int(r.next) & (len(r.slots) - 1)
		p := r.slots[slot]
		if p == nil || p.SequenceNumber != r.next {
			if allowGaps == 0 {
				return out
			}
			lost++
			r.next++
			continue
		}
		if lost > 0 {
			allowGaps--
		}
		r.slots[slot] = nil
		r.waiting--
		out = append(out, Delivery{Packet: p, Lost: lost})
		lost = 0
		r.next++
	}
	return out
}

// flush releases every waiting packet in order, declaring the gaps lost.
func (r *Reorderer) flush(out []Delivery) []Delivery {
	for r.waiting > 0 {
		out = r.drain(out, r.window+1)
	}
	return out
}

// Unwrapper extends 32-bit RTP timestamps into a monotonic-in-spirit 64-bit
// count, assuming consecutive timestamps are less than 2^31 ticks apart.
type Unwrapper struct {
	started bool
	last    int64
}

// Unwrap returns ts extended to 64 bits. The first timestamp maps to itself.
func (u *Unwrapper) Unwrap(ts uint32) int64 {
	if !u.started {
		u.started = true
		u.last = int64(ts)
		return u.last
	}
	u.last += int64(int32(ts - uint32(u.last)))
	return u.last
}
