package h264

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/pion/rtp"

	"github.com/backchannel/backchannel/internal/codec/internal/rtpseq"
)

// Defaults of the Depacketizer limits.
const (
	DefaultMaxAccessUnitSize = 8 << 20 // bytes; a 4K intra frame is a few MB
	DefaultMaxNALUs          = 1024    // per access unit
	DefaultReorderWindow     = 16      // packets
)

// Reasons a Depacketizer drops an access unit. Push wraps them.
var (
	ErrPacketLoss  = errors.New("h264: access unit dropped after RTP packet loss")
	ErrMalformed   = errors.New("h264: malformed RTP payload")
	ErrTooLarge    = errors.New("h264: access unit over the size limit")
	ErrUnsupported = errors.New("h264: unsupported RTP payload structure (interleaved mode)")

	errNoFragmentStart = fmt.Errorf("%w: FU-A continuation without a start", ErrMalformed)
)

// AccessUnit is one coded picture with its NAL units in decode order.
type AccessUnit struct {
	NALUs [][]byte
	// PTS is the RTP timestamp extended to 64 bits (90 kHz). The first
	// access unit keeps its 32-bit value; later ones count on from it.
	PTS int64
}

// DepacketizerStats counts what a Depacketizer saw.
type DepacketizerStats struct {
	PacketsLost        uint64 // sequence numbers never received
	PacketsLate        uint64 // arrived too late to reorder, or duplicates
	AccessUnits        uint64 // delivered
	AccessUnitsDropped uint64 // dropped for loss, malformed payloads or limits
}

// Depacketizer assembles H.264 access units from RTP packets of one SSRC
// (RFC 6184 packetization modes 0 and 1: single NAL unit, STAP-A, FU-A).
//
// An access unit ends at a packet with the marker bit or when the timestamp
// changes. Packets are first put back in sequence order within
// ReorderWindow packets. When a gap is declared lost, the access unit it
// hit is dropped, never delivered half: if packets after the gap carry the
// same timestamp the unit is discarded to its end; if they start a new
// timestamp, the unit in progress is dropped (its tail is missing) and the
// new one is kept only when its first slice starts the picture
// (first_mb_in_slice == 0), since its own head may have been the loss.
//
// Delivered NAL units may alias the payloads of the pushed packets, so
// packet buffers must not be reused. The zero value is ready to use.
type Depacketizer struct {
	// MaxAccessUnitSize bounds the bytes of one access unit; 0 means
	// DefaultMaxAccessUnitSize.
	MaxAccessUnitSize int
	// MaxNALUs bounds the NAL units of one access unit; 0 means
	// DefaultMaxNALUs.
	MaxNALUs int
	// ReorderWindow is how many packets may wait for a missing one; 0
	// means DefaultReorderWindow, a negative value disables reordering.
	ReorderWindow int

	reorder    *rtpseq.Reorderer
	unwrap     rtpseq.Unwrapper
	deliveries []rtpseq.Delivery

	active      bool // an access unit is open
	ts          uint32
	nalus       [][]byte
	size        int
	fu          []byte
	fuActive    bool
	broken      error // why the open unit is being discarded
	headSuspect bool  // packets just before the open unit were lost

	stats DepacketizerStats
	out   []AccessUnit
	errs  []error
}

// Stats returns the counters so far.
func (d *Depacketizer) Stats() DepacketizerStats {
	s := d.stats
	if d.reorder != nil {
		s.PacketsLate = d.reorder.Late
	}
	return s
}

func (d *Depacketizer) limits() (size, nalus int) {
	size, nalus = d.MaxAccessUnitSize, d.MaxNALUs
	if size <= 0 {
		size = DefaultMaxAccessUnitSize
	}
	if nalus <= 0 {
		nalus = DefaultMaxNALUs
	}
	return size, nalus
}

// Push adds one packet. It returns the access units completed by it, in
// decode order; the slice is reused by the next call. A non-nil error
// reports access units dropped while handling this packet (wrapping
// ErrPacketLoss, ErrMalformed, ErrTooLarge or ErrUnsupported); the
// returned units are valid regardless, and the depacketizer stays usable.
func (d *Depacketizer) Push(pkt *rtp.Packet) ([]AccessUnit, error) {
	if d.reorder == nil {
		w := d.ReorderWindow
		if w == 0 {
			w = DefaultReorderWindow
		}
		d.reorder = rtpseq.NewReorderer(w)
	}
	d.out = d.out[:0]
	d.errs = d.errs[:0]
	d.deliveries = d.reorder.Push(pkt, d.deliveries[:0])
	for _, dl := range d.deliveries {
		d.process(dl.Packet, dl.Lost)
	}
	clear(d.deliveries)
	return d.out, errors.Join(d.errs...)
}

func (d *Depacketizer) process(pkt *rtp.Packet, lost int) {
	if lost > 0 {
		d.stats.PacketsLost += uint64(lost)
		switch {
		case d.active && pkt.Timestamp == d.ts:
			d.breakUnit(fmt.Errorf("%w (%d packets)", ErrPacketLoss, lost))
		case d.active:
			d.breakUnit(fmt.Errorf("%w (%d packets)", ErrPacketLoss, lost))
			d.finish()
			d.headSuspect = true
		default:
			d.headSuspect = true
		}
	}
	if d.active && pkt.Timestamp != d.ts {
		d.finish()
	}
	if !d.active {
		d.active = true
		d.ts = pkt.Timestamp
	}
	if d.broken == nil {
		if err := d.addPayload(pkt.Payload); err != nil {
			if d.headSuspect && errors.Is(err, errNoFragmentStart) {
				err = fmt.Errorf("%w: its first fragment was lost", ErrPacketLoss)
			}
			d.breakUnit(err)
		}
	}
	if pkt.Marker {
		d.finish()
	}
}

// breakUnit drops the open access unit at once; packets still arriving
// for it are discarded until it ends.
func (d *Depacketizer) breakUnit(err error) {
	if d.broken == nil {
		d.broken = err
		d.drop(err)
	}
	d.nalus, d.fu, d.fuActive, d.size = nil, nil, false, 0
}

// finish closes the open access unit, delivering or dropping it.
func (d *Depacketizer) finish() {
	if !d.active {
		return
	}
	pts := d.unwrap.Unwrap(d.ts)
	switch {
	case d.broken != nil:
	case d.fuActive:
		d.drop(fmt.Errorf("%w: access unit ended inside a fragmented NAL unit", ErrMalformed))
	case len(d.nalus) == 0:
	case d.headSuspect && !headIntact(d.nalus):
		d.drop(fmt.Errorf("%w: its first slice was lost", ErrPacketLoss))
	default:
		d.out = append(d.out, AccessUnit{NALUs: d.nalus, PTS: pts})
		d.stats.AccessUnits++
	}
	d.active, d.broken, d.headSuspect = false, nil, false
	d.nalus, d.fu, d.fuActive, d.size = nil, nil, false, 0
}

func (d *Depacketizer) drop(err error) {
	d.stats.AccessUnitsDropped++
	d.errs = append(d.errs, err)
}

// headIntact reports whether the first slice of an access unit begins its
// picture, so that nothing a decoder needs was lost before it.
func headIntact(nalus [][]byte) bool {
	for _, n := range nalus {
		if TypeOf(n).IsVCL() {
			return startsPicture(n)
		}
	}
	return true
}

func (d *Depacketizer) addNALU(n []byte) error {
	maxSize, maxNALUs := d.limits()
	if len(d.nalus) >= maxNALUs {
		return fmt.Errorf("%w: more than %d NAL units", ErrTooLarge, maxNALUs)
	}
	if d.size+len(n) > maxSize {
		return fmt.Errorf("%w: more than %d bytes", ErrTooLarge, maxSize)
	}
	d.size += len(n)
	d.nalus = append(d.nalus, n)
	return nil
}

func (d *Depacketizer) addPayload(p []byte) error {
	if len(p) == 0 {
		return fmt.Errorf("%w: empty payload", ErrMalformed)
	}
	if p[0]&0x80 != 0 {
		return fmt.Errorf("%w: forbidden_zero_bit set", ErrMalformed)
	}
	t := NALUType(p[0] & 0x1F)
	if d.fuActive && t != NALUTypeFUA {
		return fmt.Errorf("%w: fragmented NAL unit interrupted", ErrMalformed)
	}
	switch {
	case t >= 1 && t <= 23:
		return d.addNALU(p)
	case t == NALUTypeSTAPA:
		p = p[1:]
		if len(p) == 0 {
			return fmt.Errorf("%w: empty STAP-A", ErrMalformed)
		}
		for len(p) > 0 {
			if len(p) < 2 {
				return fmt.Errorf("%w: truncated STAP-A", ErrMalformed)
			}
			n := int(binary.BigEndian.Uint16(p))
			p = p[2:]
			if n == 0 || n > len(p) {
				return fmt.Errorf("%w: bad STAP-A unit size", ErrMalformed)
			}
			if err := d.addNALU(p[:n]); err != nil {
				return err
			}
			p = p[n:]
		}
		return nil
	case t == NALUTypeFUA:
		if len(p) < 2 {
			return fmt.Errorf("%w: truncated FU-A", ErrMalformed)
		}
		start, end := p[1]&0x80 != 0, p[1]&0x40 != 0
		if start && end {
			return fmt.Errorf("%w: FU-A with both start and end bits", ErrMalformed)
		}
		maxSize, _ := d.limits()
		if start {
			if d.fuActive {
				return fmt.Errorf("%w: FU-A start inside a fragmented NAL unit", ErrMalformed)
			}
			d.fuActive = true
			d.fu = append(make([]byte, 0, len(p)*4), p[0]&0xE0|p[1]&0x1F)
		} else if !d.fuActive {
			return errNoFragmentStart
		}
		if d.size+len(d.fu)+len(p)-2 > maxSize {
			return fmt.Errorf("%w: more than %d bytes", ErrTooLarge, maxSize)
		}
		d.fu = append(d.fu, p[2:]...)
		if end {
			n := d.fu
			d.fu, d.fuActive = nil, false
			return d.addNALU(n)
		}
		return nil
	case t == NALUTypeSTAPB || t == NALUTypeMTAP16 || t == NALUTypeMTAP24 || t == NALUTypeFUB:
		return fmt.Errorf("%w: %v", ErrUnsupported, t)
	default:
		return fmt.Errorf("%w: undefined NAL unit type %d", ErrMalformed, t)
	}
}
