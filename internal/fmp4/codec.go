package fmp4

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/backchannel/backchannel/internal/codec/aac"
	"github.com/backchannel/backchannel/internal/codec/h264"
	"github.com/backchannel/backchannel/internal/codec/h265"
	"github.com/backchannel/backchannel/internal/codec/opus"
)

// Codec is the coding of a track: *H264, *H265, *AAC or *Opus.
type Codec interface {
	// CodecString returns the RFC 6381 codecs parameter for HLS CODECS=
	// and MSE, e.g. avc1.64001f, hvc1.1.6.L93.B0, mp4a.40.2, opus.
	CodecString() string
	// IsVideo reports whether the track is video.
	IsVideo() bool

	validate() error
	defaultTimeScale() uint32
	sampleEntry(w *boxWriter)
	dimensions() (width, height int)
}

// H264 is an H.264 video track (sample entry avc1 with avcC). SPS and PPS
// are NAL units, header included.
type H264 struct {
	SPS, PPS []byte
	sps      *h264.SPS
}

func (c *H264) validate() error {
	if h264.TypeOf(c.PPS) != h264.NALUTypePPS {
		return errors.New("fmp4: H264 track without a PPS")
	}
	s, err := h264.ParseSPS(c.SPS)
	if err != nil {
		return fmt.Errorf("fmp4: H264 track: %w", err)
	}
	c.sps = s
	return nil
}

// ParsedSPS returns the parsed SPS, or nil if it does not parse.
func (c *H264) ParsedSPS() *h264.SPS {
	if c.sps == nil {
		_ = c.validate()
	}
	return c.sps
}

// CodecString returns avc1.PPCCLL.
func (c *H264) CodecString() string {
	if len(c.SPS) < 4 {
		return "avc1"
	}
	return fmt.Sprintf("avc1.%02x%02x%02x", c.SPS[1], c.SPS[2], c.SPS[3])
}

// IsVideo returns true.
func (c *H264) IsVideo() bool            { return true }
func (c *H264) defaultTimeScale() uint32 { return 90000 }
func (c *H264) dimensions() (int, int)   { return c.sps.Width, c.sps.Height }

// SampleData converts an access unit to the sample format (4-byte length
// prefixes) and reports whether it is a sync sample (holds an IDR). Access
// unit delimiters, filler data and parameter sets equal to the track's are
// left out: the avcC carries those.
func (c *H264) SampleData(au [][]byte) (data []byte, sync bool) {
	// In-band parameter sets equal to the sample entry's are redundant,
	// unless the access unit also carries one that differs: then it
	// describes itself, and a PPS equal to init's may belong to the new SPS.
	changed := false
	for _, n := range au {
		switch h264.TypeOf(n) {
		case h264.NALUTypeSPS:
			changed = changed || !bytes.Equal(n, c.SPS)
		case h264.NALUTypePPS:
			changed = changed || !bytes.Equal(n, c.PPS)
		}
	}
	keep := make([][]byte, 0, len(au))
	for _, n := range au {
		switch h264.TypeOf(n) {
		case h264.NALUTypeAUD, h264.NALUTypeFiller:
			continue
		case h264.NALUTypeSPS:
			if !changed && bytes.Equal(n, c.SPS) {
				continue
			}
		case h264.NALUTypePPS:
			if !changed && bytes.Equal(n, c.PPS) {
				continue
			}
		case h264.NALUTypeIDR:
			sync = true
		}
		keep = append(keep, n)
	}
	return h264.AppendAVCC(make([]byte, 0, h264.AVCCSize(keep)), keep), sync
}

// H265 is an H.265 video track (sample entry hvc1 with hvcC). The
// parameter sets are NAL units, header included.
type H265 struct {
	VPS, SPS, PPS []byte
	sps           *h265.SPS
}

func (c *H265) validate() error {
	if h265.TypeOf(c.VPS) != h265.NALUTypeVPS || h265.TypeOf(c.PPS) != h265.NALUTypePPS {
		return errors.New("fmp4: H265 track without a VPS or PPS")
	}
	s, err := h265.ParseSPS(c.SPS)
	if err != nil {
		return fmt.Errorf("fmp4: H265 track: %w", err)
	}
	c.sps = s
	return nil
}

// ParsedSPS returns the parsed SPS, or nil if it does not parse.
func (c *H265) ParsedSPS() *h265.SPS {
	if c.sps == nil {
		_ = c.validate()
	}
	return c.sps
}

// CodecString returns hvc1.<profile>.<compatibility>.<tier+level>.<constraints>.
func (c *H265) CodecString() string {
	if s := c.ParsedSPS(); s != nil {
		return s.CodecString()
	}
	return "hvc1"
}

// IsVideo returns true.
func (c *H265) IsVideo() bool            { return true }
func (c *H265) defaultTimeScale() uint32 { return 90000 }
func (c *H265) dimensions() (int, int)   { return c.sps.Width, c.sps.Height }

// SampleData converts an access unit to the sample format and reports
// whether it is a sync sample (an IRAP picture). Access unit delimiters,
// filler data and parameter sets equal to the track's are left out.
func (c *H265) SampleData(au [][]byte) (data []byte, sync bool) {
	same := func(t h265.NALUType, n []byte) bool {
		return t == h265.NALUTypeVPS && bytes.Equal(n, c.VPS) ||
			t == h265.NALUTypeSPS && bytes.Equal(n, c.SPS) ||
			t == h265.NALUTypePPS && bytes.Equal(n, c.PPS)
	}
	// As for H.264: redundant copies go, unless one parameter set changed.
	changed := false
	for _, n := range au {
		if t := h265.TypeOf(n); (t == h265.NALUTypeVPS || t == h265.NALUTypeSPS || t == h265.NALUTypePPS) && !same(t, n) {
			changed = true
		}
	}
	keep := make([][]byte, 0, len(au))
	for _, n := range au {
		t := h265.TypeOf(n)
		switch {
		case t == h265.NALUTypeAUD || t == h265.NALUTypeFiller:
			continue
		case !changed && same(t, n):
			continue
		case t.IsIRAP():
			sync = true
		}
		keep = append(keep, n)
	}
	return h264.AppendAVCC(make([]byte, 0, h264.AVCCSize(keep)), keep), sync
}

// AAC is an MPEG-4 AAC audio track (sample entry mp4a with esds). Config is
// the AudioSpecificConfig as received (SDP config=, or aac.Config.Marshal).
// The track's default time scale is the output sample rate: the SBR rate
// when HE-AAC is signalled explicitly, where one access unit lasts twice
// aac.Config.SamplesPerFrame ticks.
type AAC struct {
	Config []byte
	cfg    aac.Config
}

func (c *AAC) validate() error {
	if err := c.cfg.Unmarshal(c.Config); err != nil {
		return fmt.Errorf("fmp4: AAC track: %w", err)
	}
	return nil
}

// CodecString returns mp4a.40.<audio object type>.
func (c *AAC) CodecString() string {
	if c.cfg.ObjectType == 0 {
		_ = c.validate()
	}
	if c.cfg.ObjectType == 0 {
		return "mp4a.40.2"
	}
	return c.cfg.CodecString()
}

// IsVideo returns false.
func (c *AAC) IsVideo() bool { return false }

func (c *AAC) sampleRate() int {
	if c.cfg.ExtensionSampleRate > 0 {
		return c.cfg.ExtensionSampleRate
	}
	return c.cfg.SampleRate
}
func (c *AAC) defaultTimeScale() uint32 { return uint32(c.sampleRate()) }
func (c *AAC) dimensions() (int, int)   { return 0, 0 }

// Opus is an Opus audio track (sample entry Opus with dOps), 48 kHz.
type Opus struct {
	Head opus.Head
}

func (c *Opus) validate() error {
	h := c.Head
	if h.Channels < 1 || h.Channels > 255 {
		return fmt.Errorf("fmp4: Opus track with %d channels", h.Channels)
	}
	if h.MappingFamily == 0 && h.Channels > 2 {
		return errors.New("fmp4: Opus mapping family 0 carries at most 2 channels")
	}
	if h.MappingFamily != 0 && (len(h.ChannelMapping) != h.Channels || h.StreamCount == 0) {
		return errors.New("fmp4: Opus channel mapping does not match the channel count")
	}
	return nil
}

// CodecString returns "opus".
func (c *Opus) CodecString() string { return opus.CodecString }

// IsVideo returns false.
func (c *Opus) IsVideo() bool            { return false }
func (c *Opus) defaultTimeScale() uint32 { return opus.SampleRate }
func (c *Opus) dimensions() (int, int)   { return 0, 0 }

// Codecs returns the HLS CODECS attribute value for the tracks.
func Codecs(tracks []Track) string {
	s := make([]string, len(tracks))
	for i, t := range tracks {
		s[i] = t.Codec.CodecString()
	}
	return strings.Join(s, ",")
}
