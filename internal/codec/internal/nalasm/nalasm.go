// Package nalasm assembles access units of NAL-unit codecs (H.264, H.265)
// from RTP packets: sequence order and loss through rtpseq, access-unit
// boundaries on the marker bit or a timestamp change, fragmented NAL
// units, size limits, and dropping whatever a loss broke. The codec
// packages supply the payload format and their error values.
package nalasm

import (
	"errors"
	"fmt"

	"github.com/pion/rtp"

	"github.com/backchannel/backchannel/internal/codec/internal/rtpseq"
)

// Errors are the codec's sentinels, wrapped by what the assembler reports.
type Errors struct {
	Loss, Malformed, TooLarge error
}

// Codec is what the assembler needs to know about a payload format.
type Codec struct {
	// Parse adds the NAL units of one RTP payload through AddNALU and the
	// fragment methods of the assembler.
	Parse func(a *Assembler, payload []byte) error
	// HeadIntact reports whether an access unit's first slice starts its
	// picture, so nothing a decoder needs can be missing before it.
	HeadIntact func(nalus [][]byte) bool
	Errors     Errors
}

// AccessUnit is an assembled access unit.
type AccessUnit struct {
	NALUs [][]byte
	PTS   int64
}

// Stats counts what the assembler saw.
type Stats struct {
	PacketsLost, PacketsLate, AccessUnits, AccessUnitsDropped uint64
}

// ErrNoFragmentStart is what Parse returns (wrapping the codec's malformed
// error) for a fragment continuation with no fragment open; after a loss
// it is reported as the loss it is.
var ErrNoFragmentStart = errors.New("fragment continuation without a start")

// Assembler is the shared depacketizer state.
type Assembler struct {
	codec    Codec
	maxSize  int
	maxNALUs int

	reorder    *rtpseq.Reorderer
	unwrap     rtpseq.Unwrapper
	deliveries []rtpseq.Delivery

	active      bool
	ts          uint32
	nalus       [][]byte
	size        int
	frag        []byte
	fragActive  bool
	broken      bool
	headSuspect bool

	stats Stats
	out   []AccessUnit
	errs  []error
}

// New returns an assembler with the given limits (all must be positive but
// reorderWindow, where <= 0 disables reordering).
func New(codec Codec, maxSize, maxNALUs, reorderWindow int) *Assembler {
	return &Assembler{codec: codec, maxSize: maxSize, maxNALUs: maxNALUs, reorder: rtpseq.NewReorderer(reorderWindow)}
}

// Stats returns the counters.
func (a *Assembler) Stats() Stats {
	s := a.stats
	s.PacketsLate = a.reorder.Late
	return s
}

// Buffered returns the bytes held for the open access unit.
func (a *Assembler) Buffered() int { return a.size + len(a.frag) }

// Push handles one packet; see the codec packages' Depacketizer.Push.
func (a *Assembler) Push(pkt *rtp.Packet) ([]AccessUnit, error) {
	a.out = a.out[:0]
	a.errs = a.errs[:0]
	a.deliveries = a.reorder.Push(pkt, a.deliveries[:0])
	for _, dl := range a.deliveries {
		a.process(dl.Packet, dl.Lost)
	}
	clear(a.deliveries)
	return a.out, errors.Join(a.errs...)
}

func (a *Assembler) process(pkt *rtp.Packet, lost int) {
	if lost > 0 {
		a.stats.PacketsLost += uint64(lost)
		lossErr := fmt.Errorf("%w (%d packets)", a.codec.Errors.Loss, lost)
		switch {
		case a.active && pkt.Timestamp == a.ts:
			a.breakUnit(lossErr)
		case a.active:
			a.breakUnit(lossErr)
			a.finish()
			a.headSuspect = true
		default:
			a.headSuspect = true
		}
	}
	if a.active && pkt.Timestamp != a.ts {
		a.finish()
	}
	if !a.active {
		a.active = true
		a.ts = pkt.Timestamp
	}
	if !a.broken {
		if err := a.codec.Parse(a, pkt.Payload); err != nil {
			if a.headSuspect && errors.Is(err, ErrNoFragmentStart) {
				err = fmt.Errorf("%w: its first fragment was lost", a.codec.Errors.Loss)
			}
			a.breakUnit(err)
		}
	}
	if pkt.Marker {
		a.finish()
	}
}

// breakUnit drops the open access unit at once; packets still arriving for
// it are discarded until it ends.
func (a *Assembler) breakUnit(err error) {
	if !a.broken {
		a.broken = true
		a.drop(err)
	}
	a.nalus, a.frag, a.fragActive, a.size = nil, nil, false, 0
}

func (a *Assembler) finish() {
	if !a.active {
		return
	}
	pts := a.unwrap.Unwrap(a.ts)
	switch {
	case a.broken:
	case a.fragActive:
		a.drop(fmt.Errorf("%w: access unit ended inside a fragmented NAL unit", a.codec.Errors.Malformed))
	case len(a.nalus) == 0:
	case a.headSuspect && !a.codec.HeadIntact(a.nalus):
		a.drop(fmt.Errorf("%w: its first slice was lost", a.codec.Errors.Loss))
	default:
		a.out = append(a.out, AccessUnit{NALUs: a.nalus, PTS: pts})
		a.stats.AccessUnits++
	}
	a.active, a.broken, a.headSuspect = false, false, false
	a.nalus, a.frag, a.fragActive, a.size = nil, nil, false, 0
}

func (a *Assembler) drop(err error) {
	a.stats.AccessUnitsDropped++
	a.errs = append(a.errs, err)
}

// FragmentOpen reports whether a fragmented NAL unit is being assembled.
func (a *Assembler) FragmentOpen() bool { return a.fragActive }

// AddNALU adds a complete NAL unit to the open access unit.
func (a *Assembler) AddNALU(n []byte) error {
	if len(a.nalus) >= a.maxNALUs {
		return fmt.Errorf("%w: more than %d NAL units", a.codec.Errors.TooLarge, a.maxNALUs)
	}
	if a.size+len(n) > a.maxSize {
		return fmt.Errorf("%w: more than %d bytes", a.codec.Errors.TooLarge, a.maxSize)
	}
	a.size += len(n)
	a.nalus = append(a.nalus, n)
	return nil
}

// StartFragment opens a fragmented NAL unit with its reconstructed header.
func (a *Assembler) StartFragment(header []byte) error {
	if a.fragActive {
		return fmt.Errorf("%w: fragment start inside a fragmented NAL unit", a.codec.Errors.Malformed)
	}
	a.fragActive = true
	a.frag = append(make([]byte, 0, 4096), header...)
	return nil
}

// AppendFragment adds a fragment's payload; end closes the NAL unit.
func (a *Assembler) AppendFragment(data []byte, end bool) error {
	if !a.fragActive {
		return fmt.Errorf("%w: %w", a.codec.Errors.Malformed, ErrNoFragmentStart)
	}
	if a.size+len(a.frag)+len(data) > a.maxSize {
		return fmt.Errorf("%w: more than %d bytes", a.codec.Errors.TooLarge, a.maxSize)
	}
	a.frag = append(a.frag, data...)
	if end {
		n := a.frag
		a.frag, a.fragActive = nil, false
		return a.AddNALU(n)
	}
	return nil
}
