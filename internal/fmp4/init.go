package fmp4

import (
	"errors"
	"fmt"

	"github.com/backchannel/backchannel/internal/codec/h265"
)

// Track is one track of an fMP4 presentation.
type Track struct {
	// ID is the track_ID, unique and non-zero.
	ID uint32
	// TimeScale is the ticks per second of the track's timestamps; 0
	// means 90000 for video and the sample rate for audio.
	TimeScale uint32
	Codec     Codec
	// Language is an ISO 639-2/T code; empty means "und".
	Language string
}

// Init is an init segment: ftyp and moov.
type Init struct {
	Tracks []Track
}

// Validate checks the tracks and fills in defaults (time scales,
// languages) so the init segment and fragments agree on them.
func (in *Init) Validate() error {
	if len(in.Tracks) == 0 {
		return errors.New("fmp4: no tracks")
	}
	seen := map[uint32]bool{}
	for i := range in.Tracks {
		t := &in.Tracks[i]
		if t.ID == 0 || seen[t.ID] {
			return fmt.Errorf("fmp4: track ID %d is zero or repeated", t.ID)
		}
		seen[t.ID] = true
		if t.Codec == nil {
			return fmt.Errorf("fmp4: track %d has no codec", t.ID)
		}
		if err := t.Codec.validate(); err != nil {
			return err
		}
		if t.TimeScale == 0 {
			t.TimeScale = t.Codec.defaultTimeScale()
		}
		if t.TimeScale == 0 {
			return fmt.Errorf("fmp4: track %d has no time scale", t.ID)
		}
		if t.Language == "" {
			t.Language = "und"
		}
		if len(t.Language) != 3 {
			return fmt.Errorf("fmp4: language %q is not a 3-letter code", t.Language)
		}
		for _, c := range t.Language {
			if c < 'a' || c > 'z' {
				return fmt.Errorf("fmp4: language %q is not lower-case ISO 639-2", t.Language)
			}
		}
	}
	return nil
}

// Marshal returns the init segment. It validates the tracks first.
func (in *Init) Marshal() ([]byte, error) {
	if err := in.Validate(); err != nil {
		return nil, err
	}
	w := &boxWriter{}

	w.start("ftyp")
	w.fourcc("iso6") // major brand: 14496-12 with tfdt, default-base-is-moof, trun v1
	w.u32(0)         // minor version
	for _, b := range []string{"iso6", "cmfc", "mp41"} {
		w.fourcc(b)
	}
	w.end()

	w.start("moov")
	w.startFull("mvhd", 0, 0)
	w.u32(0)          // creation_time
	w.u32(0)          // modification_time
	w.u32(1000)       // timescale
	w.u32(0)          // duration: unknown, fragmented
	w.u32(0x00010000) // rate 1.0
	w.u16(0x0100)     // volume 1.0
	w.zeros(10)       // reserved
	w.matrix()
	w.zeros(24) // pre_defined
	maxID := uint32(0)
	for _, t := range in.Tracks {
		maxID = max(maxID, t.ID)
	}
	w.u32(maxID + 1) // next_track_ID
	w.end()

	for _, t := range in.Tracks {
		writeTrak(w, t)
	}

	w.start("mvex")
	for _, t := range in.Tracks {
		w.startFull("trex", 0, 0)
		w.u32(t.ID)
		w.u32(1) // default_sample_description_index
		w.u32(0) // default_sample_duration
		w.u32(0) // default_sample_size
		w.u32(0) // default_sample_flags
		w.end()
	}
	w.end() // mvex
	w.end() // moov
	return w.b, nil
}

func writeTrak(w *boxWriter, t Track) {
	video := t.Codec.IsVideo()
	width, height := t.Codec.dimensions()

	w.start("trak")
	w.startFull("tkhd", 0, 3) // track_enabled | track_in_movie
	w.u32(0)                  // creation_time
	w.u32(0)                  // modification_time
	w.u32(t.ID)
	w.u32(0) // reserved
	w.u32(0) // duration
	w.zeros(8)
	w.u16(0) // layer
	w.u16(0) // alternate_group
	if video {
		w.u16(0)
	} else {
		w.u16(0x0100) // volume 1.0
	}
	w.u16(0) // reserved
	w.matrix()
	w.u32(uint32(width) << 16) // 16.16 fixed point
	w.u32(uint32(height) << 16)
	w.end()

	w.start("mdia")
	w.startFull("mdhd", 0, 0)
	w.u32(0) // creation_time
	w.u32(0) // modification_time
	w.u32(t.TimeScale)
	w.u32(0) // duration
	l := t.Language
	w.u16(uint16(l[0]-0x60)<<10 | uint16(l[1]-0x60)<<5 | uint16(l[2]-0x60))
	w.u16(0) // pre_defined
	w.end()

	w.startFull("hdlr", 0, 0)
	w.u32(0) // pre_defined
	if video {
		w.fourcc("vide")
	} else {
		w.fourcc("soun")
	}
	w.zeros(12)
	if video {
		w.bytes([]byte("VideoHandler\x00"))
	} else {
		w.bytes([]byte("SoundHandler\x00"))
	}
	w.end()

	w.start("minf")
	if video {
		w.startFull("vmhd", 0, 1)
		w.zeros(8) // graphicsmode, opcolor
	} else {
		w.startFull("smhd", 0, 0)
		w.zeros(4) // balance, reserved
	}
	w.end()
	w.start("dinf")
	w.startFull("dref", 0, 0)
	w.u32(1)
	w.startFull("url ", 0, 1) // media data in this file
	w.end()
	w.end() // dref
	w.end() // dinf

	w.start("stbl")
	w.startFull("stsd", 0, 0)
	w.u32(1)
	t.Codec.sampleEntry(w)
	w.end()
	for _, empty := range []string{"stts", "stsc", "stco"} {
		w.startFull(empty, 0, 0)
		w.u32(0) // entry_count
		w.end()
	}
	w.startFull("stsz", 0, 0)
	w.u32(0) // sample_size
	w.u32(0) // sample_count
	w.end()
	w.end() // stbl
	w.end() // minf
	w.end() // mdia
	w.end() // trak
}

// visualSampleEntry writes the VisualSampleEntry fields (14496-12 12.1.3).
func visualSampleEntry(w *boxWriter, width, height int) {
	w.zeros(6) // reserved
	w.u16(1)   // data_reference_index
	w.u16(0)   // pre_defined
	w.u16(0)   // reserved
	w.zeros(12)
	w.u16(uint16(width))
	w.u16(uint16(height))
	w.u32(0x00480000) // horizresolution 72 dpi
	w.u32(0x00480000) // vertresolution
	w.u32(0)          // reserved
	w.u16(1)          // frame_count
	w.zeros(32)       // compressorname
	w.u16(0x0018)     // depth
	w.u16(0xFFFF)     // pre_defined = -1
}

// audioSampleEntry writes the AudioSampleEntry fields (14496-12 12.2.3).
func audioSampleEntry(w *boxWriter, channels int, rate uint32) {
	w.zeros(6) // reserved
	w.u16(1)   // data_reference_index
	w.zeros(8) // reserved
	w.u16(uint16(channels))
	w.u16(16) // samplesize
	w.u16(0)  // pre_defined
	w.u16(0)  // reserved
	w.u32(rate << 16)
}

func (c *H264) sampleEntry(w *boxWriter) {
	w.start("avc1")
	visualSampleEntry(w, c.sps.Width, c.sps.Height)
	// AVCDecoderConfigurationRecord (14496-15 5.3.3.1).
	w.start("avcC")
	w.u8(1)        // configurationVersion
	w.u8(c.SPS[1]) // AVCProfileIndication
	w.u8(c.SPS[2]) // profile_compatibility
	w.u8(c.SPS[3]) // AVCLevelIndication
	w.u8(0xFC | 3) // lengthSizeMinusOne: 4-byte lengths
	w.u8(0xE0 | 1) // numOfSequenceParameterSets
	w.u16(uint16(len(c.SPS)))
	w.bytes(c.SPS)
	w.u8(1) // numOfPictureParameterSets
	w.u16(uint16(len(c.PPS)))
	w.bytes(c.PPS)
	switch c.sps.ProfileIDC {
	case 100, 110, 122, 144:
		w.u8(0xFC | uint8(c.sps.ChromaFormatIDC))
		w.u8(0xF8 | uint8(c.sps.BitDepthLuma-8))
		w.u8(0xF8 | uint8(c.sps.BitDepthChroma-8))
		w.u8(0) // numOfSequenceParameterSetExt
	}
	w.end()
	w.end()
}

func (c *H265) sampleEntry(w *boxWriter) {
	s := c.sps
	w.start("hvc1")
	visualSampleEntry(w, s.Width, s.Height)
	// HEVCDecoderConfigurationRecord (14496-15 8.3.3.1).
	w.start("hvcC")
	w.u8(1) // configurationVersion
	tier := uint8(0)
	if s.PTL.Tier {
		tier = 1
	}
	w.u8(s.PTL.ProfileSpace<<6 | tier<<5 | s.PTL.ProfileIDC)
	w.u32(s.PTL.CompatibilityFlags)
	w.u16(uint16(s.PTL.ConstraintFlags >> 32))
	w.u32(uint32(s.PTL.ConstraintFlags))
	w.u8(s.PTL.LevelIDC)
	w.u16(0xF000) // min_spatial_segmentation_idc 0
	w.u8(0xFC)    // parallelismType 0 (unknown)
	w.u8(0xFC | uint8(s.ChromaFormatIDC))
	w.u8(0xF8 | uint8(s.BitDepthLuma-8))
	w.u8(0xF8 | uint8(s.BitDepthChroma-8))
	w.u16(0) // avgFrameRate unspecified
	nested := uint8(0)
	if s.TemporalIDNesting {
		nested = 1
	}
	// constantFrameRate 0, numTemporalLayers, temporalIdNested, lengthSizeMinusOne 3.
	w.u8(uint8(s.MaxSubLayersMinus1+1)<<3 | nested<<2 | 3)
	w.u8(3) // numOfArrays
	for _, ps := range []struct {
		typ  h265.NALUType
		nalu []byte
	}{{h265.NALUTypeVPS, c.VPS}, {h265.NALUTypeSPS, c.SPS}, {h265.NALUTypePPS, c.PPS}} {
		w.u8(0x80 | uint8(ps.typ)) // array_completeness 1: no parameter sets in band
		w.u16(1)
		w.u16(uint16(len(ps.nalu)))
		w.bytes(ps.nalu)
	}
	w.end()
	w.end()
}

func (c *AAC) sampleEntry(w *boxWriter) {
	w.start("mp4a")
	audioSampleEntry(w, c.cfg.Channels(), uint32(c.sampleRate()))
	w.startFull("esds", 0, 0)
	// ES_Descriptor (14496-1 7.2.6.5) holding the DecoderConfigDescriptor
	// with the AudioSpecificConfig, and the SLConfigDescriptor.
	dsi := descriptor(0x05, c.Config)
	dcd := descriptor(0x04, append([]byte{
		0x40,        // objectTypeIndication: MPEG-4 Audio
		0x05<<2 | 1, // streamType audio, upStream 0, reserved 1
		0, 0, 0,     // bufferSizeDB
		0, 0, 0, 0, // maxBitrate
		0, 0, 0, 0, // avgBitrate
	}, dsi...))
	sl := descriptor(0x06, []byte{0x02}) // predefined: MP4
	// ES_ID 0 and no optional fields.
	w.bytes(descriptor(0x03, append(append([]byte{0, 0, 0}, dcd...), sl...)))
	w.end()
	w.end()
}

// descriptor encodes an MPEG-4 descriptor: tag, size in 7-bit groups, body.
func descriptor(tag byte, body []byte) []byte {
	out := []byte{tag}
	n := len(body)
	var size []byte
	for {
		size = append([]byte{byte(n & 0x7F)}, size...)
		n >>= 7
		if n == 0 {
			break
		}
	}
	for i := 0; i < len(size)-1; i++ {
		size[i] |= 0x80
	}
	out = append(out, size...)
	return append(out, body...)
}

func (c *Opus) sampleEntry(w *boxWriter) {
	h := c.Head
	w.start("Opus")
	audioSampleEntry(w, h.Channels, 48000)
	// OpusSpecificBox: the OpusHead fields, big-endian.
	w.start("dOps")
	w.u8(0) // Version
	w.u8(uint8(h.Channels))
	w.u16(h.PreSkip)
	w.u32(h.InputSampleRate)
	w.u16(uint16(h.OutputGain))
	w.u8(h.MappingFamily)
	if h.MappingFamily != 0 {
		w.u8(h.StreamCount)
		w.u8(h.CoupledCount)
		w.bytes(h.ChannelMapping)
	}
	w.end()
	w.end()
}
