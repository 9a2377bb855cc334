package fmp4

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrBox is wrapped by every error of the reader.
var ErrBox = errors.New("fmp4: malformed box")

// maxSamplesPerRun bounds trun sample counts the reader accepts. Besides,
// the samples of a whole buffer may not outnumber its bytes (real samples
// never share data), so truns pointing at the same bytes over and over
// cannot make the reader allocate without limit.
const maxSamplesPerRun = 1 << 20

// Box is one box found by ReadBoxes.
type Box struct {
	Type string
	// Offset is where the box starts within the buffer given to ReadBoxes,
	// and Size its length, header included.
	Offset, Size int
	// Payload is the box's content after its header; it aliases the buffer.
	Payload []byte
}

// ReadBoxes splits a buffer into its sequence of boxes, honouring 64-bit
// sizes and size 0 (to the end). It does not descend into children.
func ReadBoxes(buf []byte) ([]Box, error) {
	var out []Box
	off := 0
	for off < len(buf) {
		rest := buf[off:]
		if len(rest) < 8 {
			return out, fmt.Errorf("%w: %d stray bytes at %d", ErrBox, len(rest), off)
		}
		size := uint64(binary.BigEndian.Uint32(rest))
		typ := string(rest[4:8])
		hdr := 8
		switch size {
		case 0:
			size = uint64(len(rest))
		case 1:
			if len(rest) < 16 {
				return out, fmt.Errorf("%w: truncated 64-bit size of %q", ErrBox, typ)
			}
			size = binary.BigEndian.Uint64(rest[8:])
			hdr = 16
		}
		if size < uint64(hdr) || size > uint64(len(rest)) {
			return out, fmt.Errorf("%w: %q of size %d at %d, %d bytes left", ErrBox, typ, size, off, len(rest))
		}
		out = append(out, Box{Type: typ, Offset: off, Size: int(size), Payload: rest[hdr:size]})
		off += int(size)
	}
	return out, nil
}

// Find returns the first box at the end of a path of box types, descending
// through container boxes, e.g. Find(init, "moov", "trak", "mdia", "mdhd").
func Find(buf []byte, path ...string) (Box, bool) {
	for i, typ := range path {
		boxes, _ := ReadBoxes(buf)
		found := false
		for _, b := range boxes {
			if b.Type == typ {
				if i == len(path)-1 {
					return b, true
				}
				buf, found = b.Payload, true
				break
			}
		}
		if !found {
			return Box{}, false
		}
	}
	return Box{}, false
}

// ReadSample is a sample read back from a fragment, with its timestamps
// resolved.
type ReadSample struct {
	DTS, PTS int64
	Duration uint32
	Flags    uint32
	Data     []byte
}

// IsSync reports whether the sample flags mark a sync sample.
func (s ReadSample) IsSync() bool { return s.Flags&0x00010000 == 0 }

// ReadTrackFragment is one traf read back.
type ReadTrackFragment struct {
	TrackID        uint32
	BaseDecodeTime uint64
	Samples        []ReadSample
}

// ReadFragment is one moof (and its samples) read back.
type ReadFragment struct {
	SequenceNumber uint32
	Offset         int // of the moof within the buffer
	Tracks         []ReadTrackFragment
}

// TrackDefaults are the per-track defaults of trex that trun may rely on.
type TrackDefaults struct {
	Duration, Size, Flags uint32
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) need(n int) bool {
	if r.err == nil && len(r.b) < n {
		r.err = fmt.Errorf("%w: truncated", ErrBox)
	}
	return r.err == nil
}

func (r *reader) u8() uint8 {
	if !r.need(1) {
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) u16() uint16 {
	if !r.need(2) {
		return 0
	}
	v := binary.BigEndian.Uint16(r.b)
	r.b = r.b[2:]
	return v
}

func (r *reader) u32() uint32 {
	if !r.need(4) {
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *reader) u64() uint64 {
	if !r.need(8) {
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *reader) skip(n int) {
	if r.need(n) {
		r.b = r.b[n:]
	}
}

// ParseFragments reads every moof of a buffer (a media segment, or init
// and fragments concatenated) with the samples its truns point at. defaults
// gives the trex defaults by track ID, for truns that omit fields; it may
// be nil.
func ParseFragments(buf []byte, defaults map[uint32]TrackDefaults) ([]ReadFragment, error) {
	boxes, err := ReadBoxes(buf)
	if err != nil {
		return nil, err
	}
	var out []ReadFragment
	budget := len(buf)
	for _, b := range boxes {
		if b.Type != "moof" {
			continue
		}
		f, err := parseMoof(buf, b, defaults, &budget)
		if err != nil {
			return out, err
		}
		out = append(out, f)
	}
	return out, nil
}

func parseMoof(buf []byte, moof Box, defaults map[uint32]TrackDefaults, budget *int) (ReadFragment, error) {
	f := ReadFragment{Offset: moof.Offset}
	children, err := ReadBoxes(moof.Payload)
	if err != nil {
		return f, err
	}
	// Without a base offset or default-base-is-moof, the first traf's data
	// starts at the moof and each next one where the previous ended.
	nextBase := int64(moof.Offset)
	for _, c := range children {
		switch c.Type {
		case "mfhd":
			r := &reader{b: c.Payload}
			r.skip(4)
			f.SequenceNumber = r.u32()
			if r.err != nil {
				return f, r.err
			}
		case "traf":
			t, end, err := parseTraf(buf, c, int64(moof.Offset), nextBase, defaults, budget)
			if err != nil {
				return f, err
			}
			nextBase = end
			f.Tracks = append(f.Tracks, t)
		}
	}
	return f, nil
}

func parseTraf(buf []byte, traf Box, moofOffset, implicitBase int64, defaults map[uint32]TrackDefaults, budget *int) (ReadTrackFragment, int64, error) {
	var t ReadTrackFragment
	children, err := ReadBoxes(traf.Payload)
	if err != nil {
		return t, 0, err
	}
	base := implicitBase
	var def TrackDefaults
	haveTfhd := false
	end := implicitBase
	dts := int64(-1)
	for _, c := range children {
		r := &reader{b: c.Payload}
		switch c.Type {
		case "tfhd":
			haveTfhd = true
			flags := r.u32() & 0xFFFFFF
			t.TrackID = r.u32()
			def = defaults[t.TrackID]
			if flags&0x01 != 0 {
				base = int64(r.u64())
			} else if flags&tfhdDefaultBaseIsMoof != 0 {
				base = moofOffset
			}
			if flags&0x02 != 0 {
				r.skip(4) // sample_description_index
			}
			if flags&0x08 != 0 {
				def.Duration = r.u32()
			}
			if flags&0x10 != 0 {
				def.Size = r.u32()
			}
			if flags&0x20 != 0 {
				def.Flags = r.u32()
			}
		case "tfdt":
			v := r.u8()
			r.skip(3)
			if v == 1 {
				t.BaseDecodeTime = r.u64()
			} else {
				t.BaseDecodeTime = uint64(r.u32())
			}
			if t.BaseDecodeTime > 1<<62 {
				return t, 0, fmt.Errorf("%w: tfdt out of range", ErrBox)
			}
		case "trun":
			if !haveTfhd {
				return t, 0, fmt.Errorf("%w: trun before tfhd", ErrBox)
			}
			start := end // after the previous run's data
			if dts < 0 {
				// The first run starts at the base data offset.
				dts, start = int64(t.BaseDecodeTime), base
			}
			var err error
			dts, end, err = parseTrun(buf, r, base, start, dts, def, &t, budget)
			if err != nil {
				return t, 0, err
			}
		}
		if r.err != nil {
			return t, 0, fmt.Errorf("%s: %w", c.Type, r.err)
		}
	}
	if !haveTfhd {
		return t, 0, fmt.Errorf("%w: traf without tfhd", ErrBox)
	}
	return t, end, nil
}

// parseTrun reads one trun and its samples' data. prevEnd is where the
// previous trun's data ended, the start of this one's without data_offset.
func parseTrun(buf []byte, r *reader, base, prevEnd, dts int64, def TrackDefaults, t *ReadTrackFragment, budget *int) (int64, int64, error) {
	vf := r.u32()
	version, flags := vf>>24, vf&0xFFFFFF
	count := r.u32()
	if count > maxSamplesPerRun || int64(count) > int64(*budget) {
		return 0, 0, fmt.Errorf("%w: trun with %d samples", ErrBox, count)
	}
	*budget -= int(count)
	pos := prevEnd
	if flags&trunDataOffset != 0 {
		pos = base + int64(int32(r.u32()))
	}
	firstFlags, haveFirst := uint32(0), false
	if flags&0x04 != 0 {
		firstFlags, haveFirst = r.u32(), true
	}
	perSample := 0
	for _, f := range []uint32{trunSampleDuration, trunSampleSize, trunSampleFlags, trunSampleCTOffsets} {
		if flags&f != 0 {
			perSample += 4
		}
	}
	if r.err != nil || int64(len(r.b)) < int64(count)*int64(perSample) {
		return 0, 0, fmt.Errorf("%w: trun shorter than its %d samples", ErrBox, count)
	}
	for i := uint32(0); i < count; i++ {
		s := ReadSample{Duration: def.Duration, Flags: def.Flags}
		size := def.Size
		if flags&trunSampleDuration != 0 {
			s.Duration = r.u32()
		}
		if flags&trunSampleSize != 0 {
			size = r.u32()
		}
		if flags&trunSampleFlags != 0 {
			s.Flags = r.u32()
		} else if i == 0 && haveFirst {
			s.Flags = firstFlags
		}
		var cto int64
		if flags&trunSampleCTOffsets != 0 {
			v := r.u32()
			if version == 0 {
				cto = int64(v)
			} else {
				cto = int64(int32(v))
			}
		}
		if pos < 0 || pos+int64(size) > int64(len(buf)) {
			return 0, 0, fmt.Errorf("%w: sample %d of track %d lies outside the data", ErrBox, i, t.TrackID)
		}
		s.Data = buf[pos : pos+int64(size)]
		s.DTS = dts
		s.PTS = dts + cto
		pos += int64(size)
		dts += int64(s.Duration)
		t.Samples = append(t.Samples, s)
	}
	return dts, pos, r.err
}

// InitTrack is what ParseInit reports about one track.
type InitTrack struct {
	ID          uint32
	TimeScale   uint32
	Handler     string // "vide", "soun"
	SampleEntry string // "avc1", "hvc1", "mp4a", "Opus", ...
	Language    string
	Width       int // from tkhd
	Height      int
	Defaults    TrackDefaults // from trex
}

// ParseInit reads the tracks of an init segment (or of anything starting
// with a moov).
func ParseInit(buf []byte) ([]InitTrack, error) {
	moov, ok := Find(buf, "moov")
	if !ok {
		return nil, fmt.Errorf("%w: no moov", ErrBox)
	}
	boxes, err := ReadBoxes(moov.Payload)
	if err != nil {
		return nil, err
	}
	var tracks []InitTrack
	for _, b := range boxes {
		if b.Type != "trak" {
			continue
		}
		var t InitTrack
		if tkhd, ok := Find(b.Payload, "tkhd"); ok {
			r := &reader{b: tkhd.Payload}
			if r.u8() == 1 {
				r.skip(3 + 16)
				t.ID = r.u32()
				r.skip(4 + 8)
			} else {
				r.skip(3 + 8)
				t.ID = r.u32()
				r.skip(4 + 4)
			}
			r.skip(8 + 8 + 36)
			t.Width, t.Height = int(r.u32()>>16), int(r.u32()>>16)
			if r.err != nil {
				return nil, fmt.Errorf("tkhd: %w", r.err)
			}
		}
		if mdhd, ok := Find(b.Payload, "mdia", "mdhd"); ok {
			r := &reader{b: mdhd.Payload}
			if r.u8() == 1 {
				r.skip(3 + 16)
				t.TimeScale = r.u32()
				r.skip(8)
			} else {
				r.skip(3 + 8)
				t.TimeScale = r.u32()
				r.skip(4)
			}
			lang := r.u16()
			t.Language = string([]byte{byte(lang>>10&31) + 0x60, byte(lang>>5&31) + 0x60, byte(lang&31) + 0x60})
			if r.err != nil {
				return nil, fmt.Errorf("mdhd: %w", r.err)
			}
		}
		if hdlr, ok := Find(b.Payload, "mdia", "hdlr"); ok && len(hdlr.Payload) >= 12 {
			t.Handler = string(hdlr.Payload[8:12])
		}
		if stsd, ok := Find(b.Payload, "mdia", "minf", "stbl", "stsd"); ok && len(stsd.Payload) >= 8 {
			if entries, _ := ReadBoxes(stsd.Payload[8:]); len(entries) > 0 {
				t.SampleEntry = entries[0].Type
			}
		}
		tracks = append(tracks, t)
	}
	if mvex, ok := Find(moov.Payload, "mvex"); ok {
		boxes, _ := ReadBoxes(mvex.Payload)
		for _, b := range boxes {
			if b.Type != "trex" {
				continue
			}
			r := &reader{b: b.Payload}
			r.skip(4)
			id := r.u32()
			r.skip(4)
			d := TrackDefaults{Duration: r.u32(), Size: r.u32(), Flags: r.u32()}
			if r.err != nil {
				return nil, fmt.Errorf("trex: %w", r.err)
			}
			for i := range tracks {
				if tracks[i].ID == id {
					tracks[i].Defaults = d
				}
			}
		}
	}
	return tracks, nil
}

// Defaults returns the trex defaults of the tracks by ID, for ParseFragments.
func Defaults(tracks []InitTrack) map[uint32]TrackDefaults {
	m := make(map[uint32]TrackDefaults, len(tracks))
	for _, t := range tracks {
		m[t.ID] = t.Defaults
	}
	return m
}
