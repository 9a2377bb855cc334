package media

import "time"

// Munger rewrites RTP sequence numbers and timestamps once per packet so the
// outgoing stream stays continuous when its source changes: the first packet
// of a new source gets the sequence number after the last one sent and a
// timestamp advanced by the wall-clock time since then. Within one source
// the offsets are fixed, so gaps (losses the receivers may NACK) and
// reordering pass through unchanged. All arithmetic wraps like the 16-bit
// and 32-bit RTP fields it models.
//
// A Munger is not safe for concurrent use; a Track serializes its writers.
type Munger struct {
	clockRate uint32
	firstSeq  uint16
	firstTS   uint32

	sent   bool // any packet ever went out
	synced bool // offsets are set for the current source

	seqOffset uint16
	tsOffset  uint32
	baseIn    uint16 // oldest input sequence number forwarded for the current source
	highestIn uint16

	lastSeq uint16
	lastTS  uint32
	lastAt  time.Time
}

// maxStragglerAge is how far (in packets) behind the newest one a late
// packet may arrive and still be forwarded.
const maxStragglerAge = 1 << 14

// reorderRoom is how far (in packets) before the first packet of a stream
// a late one may be and still be forwarded.
const reorderRoom = 32

// NewMunger returns a munger for a clock rate (Hz) whose first output packet
// will carry firstSeq and firstTS. Streams start them at random values, as
// RFC 3550 asks of any sender.
func NewMunger(clockRate uint32, firstSeq uint16, firstTS uint32) *Munger {
	return &Munger{clockRate: clockRate, firstSeq: firstSeq, firstTS: firstTS}
}

// Reset makes the next packet the first of a new source.
func (m *Munger) Reset() { m.synced = false }

// Munge maps an input packet of the current source to its output sequence
// number and timestamp. ok is false for packets that must be dropped:
// stragglers from before a new source's first packet, whose output numbers
// would collide with packets already sent, and those more than reorderRoom
// before the first packet of a stream.
func (m *Munger) Munge(seq uint16, ts uint32, now time.Time) (outSeq uint16, outTS uint32, ok bool) {
	if !m.synced {
		m.resync(seq, ts, now)
		return m.lastSeq, m.lastTS, true
	}
	if int16(seq-m.baseIn) < 0 {
		return 0, 0, false
	}
	outSeq, outTS = seq+m.seqOffset, ts+m.tsOffset
	if int16(seq-m.highestIn) > 0 {
		m.highestIn = seq
		m.lastSeq, m.lastTS, m.lastAt = outSeq, outTS, now
		// Keep the straggler bound within half the sequence space of the
		// newest packet, or wraparound would make new packets look old.
		if seq-m.baseIn > maxStragglerAge {
			m.baseIn = seq - maxStragglerAge
		}
	}
	return outSeq, outTS, true
}

func (m *Munger) resync(seq uint16, ts uint32, now time.Time) {
	outSeq, outTS := m.firstSeq, m.firstTS
	// The first packet to arrive need not be the first sent: packets of
	// one frame can be reordered (by the network, or by pion's ICE when
	// several local candidates share one socket), and a keyframe's
	// parameter sets arriving just after its first slice must still go
	// out. Before any packet was sent, numbers below the first are free.
	base := seq - reorderRoom
	if m.sent {
		outSeq = m.lastSeq + 1
		outTS = m.lastTS + m.ticksSince(now)
		base = seq // numbers below outSeq went out for the old source
	}
	m.seqOffset, m.tsOffset = outSeq-seq, outTS-ts
	m.baseIn, m.highestIn = base, seq
	m.lastSeq, m.lastTS, m.lastAt = outSeq, outTS, now
	m.sent, m.synced = true, true
}

// ticksSince converts the wall-clock time since the last packet into clock
// ticks, at least one so the new source's first frame never shares the old
// source's last timestamp.
func (m *Munger) ticksSince(now time.Time) uint32 {
	elapsed := now.Sub(m.lastAt)
	if elapsed <= 0 {
		return 1
	}
	ticks := uint64(elapsed/time.Microsecond) * uint64(m.clockRate) / 1e6
	if ticks == 0 {
		return 1
	}
	return uint32(ticks) // wraps as RTP timestamps do
}

// Timestamp maps an input RTP timestamp of the current source (e.g. from a
// sender report) to the output timeline. ok is false before the current
// source's first packet.
func (m *Munger) Timestamp(ts uint32) (uint32, bool) {
	if !m.synced {
		return 0, false
	}
	return ts + m.tsOffset, true
}

// Last returns the newest output sequence number and timestamp; ok is false
// before the first packet.
func (m *Munger) Last() (seq uint16, ts uint32, ok bool) {
	return m.lastSeq, m.lastTS, m.sent
}
