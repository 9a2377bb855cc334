package h265

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/pion/rtp"

	"github.com/backchannel/backchannel/internal/codec/internal/nalasm"
)

// Defaults of the Depacketizer limits.
const (
	DefaultMaxAccessUnitSize = 8 << 20 // bytes
	DefaultMaxNALUs          = 1024    // per access unit
	DefaultReorderWindow     = 16      // packets
)

// Reasons a Depacketizer drops an access unit. Push wraps them.
var (
	ErrPacketLoss  = errors.New("h265: access unit dropped after RTP packet loss")
	ErrMalformed   = errors.New("h265: malformed RTP payload")
	ErrTooLarge    = errors.New("h265: access unit over the size limit")
	ErrUnsupported = fmt.Errorf("%w: unsupported payload structure", ErrMalformed)
)

// AccessUnit is one coded picture with its NAL units in decode order.
type AccessUnit struct {
	NALUs [][]byte
	// PTS is the RTP timestamp extended to 64 bits (90 kHz).
	PTS int64
}

// DepacketizerStats counts what a Depacketizer saw.
type DepacketizerStats struct {
	PacketsLost        uint64
	PacketsLate        uint64
	AccessUnits        uint64
	AccessUnitsDropped uint64
}

// Depacketizer assembles H.265 access units from the RTP packets of one
// SSRC per RFC 7798: single NAL unit packets, aggregation packets (type
// 48) and fragmentation units (type 49), without decoding order numbers
// (sprop-max-don-diff = 0, the only mode senders use in practice); PACI
// packets are refused.
//
// Access unit boundaries, reordering, loss handling and limits behave as
// for h264.Depacketizer; a unit after a loss is kept only if its first
// slice segment has first_slice_segment_in_pic_flag set. Delivered NAL
// units may alias the pushed packets' payloads. The zero value is ready.
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

// Push adds one packet and returns the access units it completed, in
// decode order; the slice is reused by the next call. A non-nil error
// reports access units dropped while handling the packet (wrapping
// ErrPacketLoss, ErrMalformed or ErrTooLarge); the returned units are
// valid regardless.
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

func headIntact(nalus [][]byte) bool {
	for _, n := range nalus {
		if TypeOf(n).IsVCL() {
			return startsPicture(n)
		}
	}
	return true
}

func parsePayload(a *nalasm.Assembler, p []byte) error {
	if len(p) < 3 {
		return fmt.Errorf("%w: payload shorter than 3 bytes", ErrMalformed)
	}
	if p[0]&0x80 != 0 {
		return fmt.Errorf("%w: forbidden_zero_bit set", ErrMalformed)
	}
	t := TypeOf(p)
	if a.FragmentOpen() && t != NALUTypeFU {
		return fmt.Errorf("%w: fragmented NAL unit interrupted", ErrMalformed)
	}
	switch {
	case t < 48:
		return a.AddNALU(p)
	case t == NALUTypeAP:
		p = p[2:]
		for len(p) > 0 {
			if len(p) < 2 {
				return fmt.Errorf("%w: truncated aggregation packet", ErrMalformed)
			}
			n := int(binary.BigEndian.Uint16(p))
			p = p[2:]
			if n < 2 || n > len(p) {
				return fmt.Errorf("%w: bad aggregation unit size", ErrMalformed)
			}
			if err := a.AddNALU(p[:n]); err != nil {
				return err
			}
			p = p[n:]
		}
		return nil
	case t == NALUTypeFU:
		fuHeader := p[2]
		start, end := fuHeader&0x80 != 0, fuHeader&0x40 != 0
		if start && end {
			return fmt.Errorf("%w: FU with both start and end bits", ErrMalformed)
		}
		if start {
			fuType := fuHeader & 0x3F
			if fuType >= 48 {
				return fmt.Errorf("%w: FU carries type %d", ErrMalformed, fuType)
			}
			hdr := []byte{p[0]&0x81 | fuType<<1, p[1]}
			if err := a.StartFragment(hdr); err != nil {
				return err
			}
		}
		return a.AppendFragment(p[3:], end)
	case t == NALUTypePACI:
		return fmt.Errorf("%w: PACI", ErrUnsupported)
	default:
		return fmt.Errorf("%w: undefined NAL unit type %d", ErrMalformed, t)
	}
}
