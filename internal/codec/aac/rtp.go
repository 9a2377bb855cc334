package aac

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/pion/rtp"

	"github.com/backchannel/backchannel/internal/codec/internal/bits"
	"github.com/backchannel/backchannel/internal/codec/internal/rtpseq"
)

// Defaults of the Depacketizer.
const (
	// DefaultMaxAUSize bounds one access unit: 6144 bits per channel
	// (14496-3 4.5.3.2) for 8 channels, with room to spare.
	DefaultMaxAUSize     = 16384
	DefaultReorderWindow = 8 // packets
	maxAUsPerPacket      = 512
)

// Reasons a Depacketizer drops access units. Push wraps them.
var (
	ErrPacketLoss   = errors.New("aac: access unit dropped after RTP packet loss")
	ErrMalformed    = errors.New("aac: malformed RTP payload")
	ErrTooLarge     = errors.New("aac: access unit over the size limit")
	ErrInterleaving = fmt.Errorf("%w: interleaved access units unsupported", ErrMalformed)
)

// FMTP is what an mpeg4-generic SDP fmtp line (RFC 3640) says about an AAC
// stream.
type FMTP struct {
	Mode             string // "AAC-hbr" or "AAC-lbr"
	Config           Config
	ConfigBytes      []byte // the AudioSpecificConfig as given
	SizeLength       int
	IndexLength      int
	IndexDeltaLength int
}

// ParseFMTP parses the parameters of an a=fmtp line for mpeg4-generic (the
// part after the payload type), e.g. "streamtype=5;profile-level-id=1;
// mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3;config=1190".
func ParseFMTP(fmtp string) (FMTP, error) {
	var f FMTP
	for _, kv := range strings.Split(fmtp, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		num := func() (int, error) {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > 32 {
				return 0, fmt.Errorf("aac: invalid %s %q", k, v)
			}
			return n, nil
		}
		var err error
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "mode":
			f.Mode = v
		case "config":
			f.ConfigBytes, err = hex.DecodeString(v)
			if err == nil {
				err = f.Config.Unmarshal(f.ConfigBytes)
			}
		case "sizelength":
			f.SizeLength, err = num()
		case "indexlength":
			f.IndexLength, err = num()
		case "indexdeltalength":
			f.IndexDeltaLength, err = num()
		}
		if err != nil {
			return f, fmt.Errorf("aac: fmtp %s: %w", k, err)
		}
	}
	if f.ConfigBytes == nil {
		return f, errors.New("aac: fmtp without config")
	}
	if f.SizeLength == 0 {
		return f, errors.New("aac: fmtp without sizelength")
	}
	return f, nil
}

// AccessUnit is one raw AAC frame.
type AccessUnit struct {
	Data []byte
	// PTS is in the sample-rate clock, extended to 64 bits: the packet's
	// RTP timestamp plus SamplesPerAU for each access unit before it.
	PTS int64
}

// DepacketizerStats counts what a Depacketizer saw.
type DepacketizerStats struct {
	PacketsLost        uint64
	PacketsLate        uint64
	AccessUnits        uint64
	AccessUnitsDropped uint64
}

// Depacketizer extracts AAC access units from RTP packets of one SSRC in
// the RFC 3640 mpeg4-generic format: AU headers (AU-size, AU-Index /
// AU-Index-delta), several access units per packet, and one access unit
// fragmented over several packets (same timestamp, marker on the last).
// Interleaving (non-zero indexes), CTS/DTS deltas and auxiliary data are
// not supported.
//
// Packets are put back in sequence order within ReorderWindow packets. A
// lost packet costs only the access units it carried: complete ones in
// other packets are unaffected, and a fragmented one that lost a piece is
// dropped whole. Unfragmented access units alias the packet payloads.
type Depacketizer struct {
	// SizeLength, IndexLength and IndexDeltaLength are the fmtp
	// parameters; all zero means AAC-hbr (13, 3, 3).
	SizeLength, IndexLength, IndexDeltaLength int
	// SamplesPerAU is the duration of one access unit; 0 means 1024.
	SamplesPerAU int
	// MaxAUSize bounds one access unit; 0 means DefaultMaxAUSize.
	MaxAUSize int
	// ReorderWindow is how many packets may wait for a missing one; 0
	// means DefaultReorderWindow, negative disables reordering.
	ReorderWindow int

	reorder    *rtpseq.Reorderer
	unwrap     rtpseq.Unwrapper
	deliveries []rtpseq.Delivery

	frag       []byte
	fragSize   int
	fragTS     uint32
	fragActive bool
	discardTS  uint32 // fragments of this timestamp are discarded
	discarding bool

	stats DepacketizerStats
	out   []AccessUnit
	errs  []error
}

// NewDepacketizer returns a depacketizer for a stream described by fmtp.
func NewDepacketizer(f FMTP) *Depacketizer {
	return &Depacketizer{
		SizeLength: f.SizeLength, IndexLength: f.IndexLength, IndexDeltaLength: f.IndexDeltaLength,
		SamplesPerAU: f.Config.SamplesPerFrame(),
	}
}

// Stats returns the counters so far.
func (d *Depacketizer) Stats() DepacketizerStats {
	s := d.stats
	if d.reorder != nil {
		s.PacketsLate = d.reorder.Late
	}
	return s
}

// Push adds one packet and returns the access units now complete, in
// order; the slice is reused by the next call. A non-nil error reports
// access units dropped while handling the packet; the returned units are
// valid regardless.
func (d *Depacketizer) Push(pkt *rtp.Packet) ([]AccessUnit, error) {
	if d.reorder == nil {
		if d.SizeLength == 0 && d.IndexLength == 0 && d.IndexDeltaLength == 0 {
			d.SizeLength, d.IndexLength, d.IndexDeltaLength = 13, 3, 3
		}
		if d.SamplesPerAU <= 0 {
			d.SamplesPerAU = 1024
		}
		if d.MaxAUSize <= 0 {
			d.MaxAUSize = DefaultMaxAUSize
		}
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
		if err := d.process(dl.Packet, dl.Lost); err != nil {
			d.stats.AccessUnitsDropped++
			d.errs = append(d.errs, err)
		}
	}
	clear(d.deliveries)
	return d.out, errors.Join(d.errs...)
}

func (d *Depacketizer) process(pkt *rtp.Packet, lost int) error {
	var lossErr error
	if lost > 0 {
		d.stats.PacketsLost += uint64(lost)
		if d.fragActive {
			// The open fragmented unit lost a piece: drop it, and any
			// further fragments of it.
			d.fragActive, d.frag = false, nil
			d.discarding, d.discardTS = true, d.fragTS
			lossErr = fmt.Errorf("%w (%d packets)", ErrPacketLoss, lost)
		} else {
			// The lost packets may have held the start of a fragmented
			// unit that continues here; a continuation shows by sharing
			// the timestamp of the last packet lost, which is unknown, so
			// fragments are accepted only from a fresh start below.
			d.discarding, d.discardTS = true, pkt.Timestamp
		}
	}
	if d.discarding && pkt.Timestamp != d.discardTS {
		d.discarding = false
	}

	sizes, data, err := d.parseHeaders(pkt.Payload)
	if err != nil {
		return errors.Join(lossErr, err)
	}
	if len(sizes) == 1 && sizes[0] > len(data) || d.fragActive {
		// A loss already reported need not be reported again.
		return errors.Join(lossErr, d.fragment(pkt, sizes, data, lost > 0 && lossErr == nil))
	}
	d.discarding = false
	base := d.unwrap.Unwrap(pkt.Timestamp)
	for i, n := range sizes {
		if n > len(data) {
			return errors.Join(lossErr, fmt.Errorf("%w: AU sizes exceed the payload", ErrMalformed))
		}
		if n > d.MaxAUSize {
			return errors.Join(lossErr, fmt.Errorf("%w: %d bytes", ErrTooLarge, n))
		}
		d.out = append(d.out, AccessUnit{Data: data[:n], PTS: base + int64(i)*int64(d.SamplesPerAU)})
		d.stats.AccessUnits++
		data = data[n:]
	}
	return lossErr
}

// fragment handles a packet carrying a piece of one access unit.
func (d *Depacketizer) fragment(pkt *rtp.Packet, sizes []int, data []byte, afterLoss bool) error {
	if len(sizes) != 1 {
		d.fragActive, d.frag = false, nil
		return fmt.Errorf("%w: fragmented access unit interrupted", ErrMalformed)
	}
	size := sizes[0]
	if size > d.MaxAUSize {
		d.fragActive, d.frag = false, nil
		d.discarding, d.discardTS = true, pkt.Timestamp
		return fmt.Errorf("%w: %d bytes", ErrTooLarge, size)
	}
	if d.fragActive && (pkt.Timestamp != d.fragTS || size != d.fragSize) {
		d.fragActive, d.frag = false, nil
		return fmt.Errorf("%w: fragmented access unit interrupted", ErrMalformed)
	}
	if !d.fragActive {
		if d.discarding {
			// A continuation of a unit whose first piece was lost.
			if pkt.Marker {
				d.discarding = false
			}
			if afterLoss {
				return fmt.Errorf("%w: its first fragment was lost", ErrPacketLoss)
			}
			return nil
		}
		d.fragActive, d.fragTS, d.fragSize = true, pkt.Timestamp, size
		d.frag = make([]byte, 0, size)
	}
	if len(d.frag)+len(data) > d.fragSize {
		d.fragActive, d.frag = false, nil
		return fmt.Errorf("%w: fragments exceed the AU size", ErrMalformed)
	}
	d.frag = append(d.frag, data...)
	if len(d.frag) < d.fragSize {
		if pkt.Marker {
			d.fragActive, d.frag = false, nil
			return fmt.Errorf("%w: access unit ended before its size", ErrMalformed)
		}
		return nil
	}
	d.out = append(d.out, AccessUnit{Data: d.frag, PTS: d.unwrap.Unwrap(pkt.Timestamp)})
	d.stats.AccessUnits++
	d.fragActive, d.frag = false, nil
	return nil
}

// parseHeaders reads the AU header section and returns the AU sizes and
// the data after the headers.
func (d *Depacketizer) parseHeaders(p []byte) ([]int, []byte, error) {
	if len(p) < 2 {
		return nil, nil, fmt.Errorf("%w: no AU-headers-length", ErrMalformed)
	}
	headerBits := int(p[0])<<8 | int(p[1])
	headerBytes := (headerBits + 7) / 8
	if headerBits == 0 || 2+headerBytes > len(p) {
		return nil, nil, fmt.Errorf("%w: AU-headers-length %d", ErrMalformed, headerBits)
	}
	r := bits.NewReader(p[2 : 2+headerBytes])
	var sizes []int
	for i := 0; r.Pos() < headerBits; i++ {
		if i == maxAUsPerPacket {
			return nil, nil, fmt.Errorf("%w: too many AU headers", ErrMalformed)
		}
		size := int(r.U(d.SizeLength))
		idxLen := d.IndexDeltaLength
		if i == 0 {
			idxLen = d.IndexLength
		}
		if r.U(idxLen) != 0 {
			return nil, nil, ErrInterleaving
		}
		if r.Err() != nil || r.Pos() > headerBits {
			return nil, nil, fmt.Errorf("%w: truncated AU header", ErrMalformed)
		}
		if size == 0 {
			return nil, nil, fmt.Errorf("%w: empty access unit", ErrMalformed)
		}
		sizes = append(sizes, size)
	}
	return sizes, p[2+headerBytes:], nil
}
