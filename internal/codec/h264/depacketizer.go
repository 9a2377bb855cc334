package h264

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/pion/rtp"

	"github.com/backchannel/backchannel/internal/codec/internal/nalasm"
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
	ErrUnsupported = fmt.Errorf("%w: unsupported payload structure (interleaved mode)", ErrMalformed)
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

// Depacketizer assembles H.264 access units from the RTP packets of one
// SSRC (RFC 6184 packetization modes 0 and 1: single NAL unit, STAP-A and
// FU-A packets; the interleaved mode's STAP-B, MTAP and FU-B are refused).
//
// An access unit ends at a packet with the marker bit or when the
// timestamp changes. Packets are first put back in sequence order: one
// may arrive up to ReorderWindow packets late. The first packet fixes the
// start of the sequence, so packets older than it are dropped as late.
//
// When a gap is declared lost, the access unit it hit is dropped, never
// delivered half. If packets after the gap carry the open unit's
// timestamp, that unit is discarded to its end. If they start a new
// timestamp, the open unit is dropped (its tail is missing) and the new
// one is kept only if its first slice begins the picture
// (first_mb_in_slice = 0): its own head may have been lost. Such a unit
// may lack non-slice NAL units (SPS, PPS, SEI) that preceded its first
// slice; the parameter sets of the track (SDP, avcC) cover for them.
//
// Delivered NAL units may alias the payloads of the pushed packets, so
// packet buffers must not be reused. The zero value is ready to use; set
// the limits before the first Push.
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

	asm *nalasm.Assembler
	out []AccessUnit
}

var codec = nalasm.Codec{
	Parse:      parsePayload,
	HeadIntact: headIntact,
	Errors:     nalasm.Errors{Loss: ErrPacketLoss, Malformed: ErrMalformed, TooLarge: ErrTooLarge},
}

// Push adds one packet. It returns the access units completed by it, in
// decode order; the slice is reused by the next call. A non-nil error
// reports access units dropped while handling this packet (wrapping
// ErrPacketLoss, ErrMalformed or ErrTooLarge); the returned units are
// valid regardless, and the depacketizer stays usable.
func (d *Depacketizer) Push(pkt *rtp.Packet) ([]AccessUnit, error) {
	if d.asm == nil {
		size, nalus, window := d.MaxAccessUnitSize, d.MaxNALUs, d.ReorderWindow
		if size <= 0 {
			size = DefaultMaxAccessUnitSize
		}
		if nalus <= 0 {
			nalus = DefaultMaxNALUs
		}
		if window == 0 {
			window = DefaultReorderWindow
		}
		d.asm = nalasm.New(codec, size, nalus, window)
	}
	aus, err := d.asm.Push(pkt)
	d.out = d.out[:0]
	for _, au := range aus {
		d.out = append(d.out, AccessUnit{NALUs: au.NALUs, PTS: au.PTS})
	}
	return d.out, err
}

// Stats returns the counters so far.
func (d *Depacketizer) Stats() DepacketizerStats {
	if d.asm == nil {
		return DepacketizerStats{}
	}
	s := d.asm.Stats()
	return DepacketizerStats{PacketsLost: s.PacketsLost, PacketsLate: s.PacketsLate,
		AccessUnits: s.AccessUnits, AccessUnitsDropped: s.AccessUnitsDropped}
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

func parsePayload(a *nalasm.Assembler, p []byte) error {
	if len(p) == 0 {
		return fmt.Errorf("%w: empty payload", ErrMalformed)
	}
	if p[0]&0x80 != 0 {
		return fmt.Errorf("%w: forbidden_zero_bit set", ErrMalformed)
	}
	t := NALUType(p[0] & 0x1F)
	if a.FragmentOpen() && t != NALUTypeFUA {
		return fmt.Errorf("%w: fragmented NAL unit interrupted", ErrMalformed)
	}
	switch {
	case t >= 1 && t <= 23:
		return a.AddNALU(p)
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
			if err := a.AddNALU(p[:n]); err != nil {
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
		if start {
			if err := a.StartFragment([]byte{p[0]&0xE0 | p[1]&0x1F}); err != nil {
				return err
			}
		}
		return a.AppendFragment(p[2:], end)
	case t == NALUTypeSTAPB || t == NALUTypeMTAP16 || t == NALUTypeMTAP24 || t == NALUTypeFUB:
		return fmt.Errorf("%w: %v", ErrUnsupported, t)
	default:
		return fmt.Errorf("%w: undefined NAL unit type %d", ErrMalformed, t)
	}
}
