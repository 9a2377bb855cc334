// Package opus owns what Backchannel needs to know about Opus audio: packet
// TOC parsing (frame count and duration, which give MP4 sample durations),
// the "opus" codec string, and the identification header fields (RFC 7845
// OpusHead) that the MP4 dOps box carries ("Encapsulation of Opus in ISO
// Base Media File Format"). Over RTP (RFC 7587) one packet carries one
// Opus packet with a 48 kHz timestamp, so there is nothing to depacketize.
package opus

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// SampleRate is the rate of Opus timestamps and durations, whatever the
// coded bandwidth.
const SampleRate = 48000

// CodecString is the RFC 6381 codecs parameter of Opus in MP4.
const CodecString = "opus"

// ErrPacket is wrapped by every packet parsing error.
var ErrPacket = errors.New("opus: invalid packet")

// TOC is the table-of-contents byte of an Opus packet (RFC 6716 3.1).
type TOC struct {
	Config int  // 0..31: mode, bandwidth and frame size
	Stereo bool // s bit
	Code   int  // 0..3: frames in the packet (one, two equal, two different, arbitrary)
}

// ParseTOC splits a TOC byte.
func ParseTOC(b byte) TOC {
	return TOC{Config: int(b >> 3), Stereo: b&4 != 0, Code: int(b & 3)}
}

// FrameSamples returns the duration of one frame at 48 kHz (Table 2:
// SILK 10/20/40/60 ms, hybrid 10/20 ms, CELT 2.5/5/10/20 ms).
func (t TOC) FrameSamples() int {
	switch {
	case t.Config < 12:
		return [4]int{480, 960, 1920, 2880}[t.Config%4]
	case t.Config < 16:
		return [2]int{480, 960}[t.Config%2]
	default:
		return [4]int{120, 240, 480, 960}[t.Config%4]
	}
}

// Frames returns the number of frames in a packet.
func Frames(pkt []byte) (int, error) {
	if len(pkt) == 0 {
		return 0, fmt.Errorf("%w: empty", ErrPacket)
	}
	switch ParseTOC(pkt[0]).Code {
	case 0:
		return 1, nil
	case 1, 2:
		return 2, nil
	}
	if len(pkt) < 2 {
		return 0, fmt.Errorf("%w: code 3 without a frame count", ErrPacket)
	}
	n := int(pkt[1] & 0x3F)
	if n == 0 {
		return 0, fmt.Errorf("%w: zero frames", ErrPacket)
	}
	return n, nil
}

// PacketDuration returns a packet's duration in 48 kHz samples. Packets
// longer than 120 ms are invalid (RFC 6716 3.2.5).
func PacketDuration(pkt []byte) (int, error) {
	n, err := Frames(pkt)
	if err != nil {
		return 0, err
	}
	d := n * ParseTOC(pkt[0]).FrameSamples()
	if d > 5760 {
		return 0, fmt.Errorf("%w: %d samples, over 120 ms", ErrPacket, d)
	}
	return d, nil
}

// Head is the Opus identification header (RFC 7845 5.1), which the MP4
// dOps box carries big-endian and Ogg carries little-endian as OpusHead.
type Head struct {
	Channels        int // output channel count, 1..255
	PreSkip         uint16
	InputSampleRate uint32 // informational
	OutputGain      int16  // Q7.8 dB
	// MappingFamily 0 is mono/stereo; 1 is Vorbis order for up to 8
	// channels, with the stream layout below.
	MappingFamily  uint8
	StreamCount    uint8
	CoupledCount   uint8
	ChannelMapping []byte
}

// DefaultPreSkip is libopus's encoder delay at 48 kHz (6.5 ms), what most
// encoders declare.
const DefaultPreSkip = 312

// vorbisLayouts are the stream layouts of mapping family 1 (RFC 7845
// 5.1.1.2) that libopus's surround encoder uses, for 1..8 channels.
var vorbisLayouts = [9]struct {
	streams, coupled uint8
	mapping          []byte
}{
	{},
	{1, 0, []byte{0}},
	{1, 1, []byte{0, 1}},
	{2, 1, []byte{0, 2, 1}},
	{2, 2, []byte{0, 1, 2, 3}},
	{3, 2, []byte{0, 4, 1, 2, 3}},
	{4, 2, []byte{0, 4, 1, 2, 3, 5}},
	{4, 3, []byte{0, 4, 1, 2, 3, 5, 6}},
	{5, 3, []byte{0, 6, 1, 2, 3, 4, 5, 7}},
}

// NewHead returns the header of a stream with the given channels as
// libopus encodes it: family 0 for one or two channels, family 1 with the
// Vorbis layout for three to eight, 48 kHz input, DefaultPreSkip.
func NewHead(channels int) (Head, error) {
	if channels < 1 || channels > 8 {
		return Head{}, fmt.Errorf("opus: %d channels unsupported", channels)
	}
	h := Head{Channels: channels, PreSkip: DefaultPreSkip, InputSampleRate: SampleRate}
	if channels > 2 {
		l := vorbisLayouts[channels]
		h.MappingFamily, h.StreamCount, h.CoupledCount = 1, l.streams, l.coupled
		h.ChannelMapping = append([]byte(nil), l.mapping...)
	}
	return h, nil
}

// ErrHead is wrapped by OpusHead parsing errors.
var ErrHead = errors.New("opus: invalid OpusHead")

// ParseOpusHead parses the Ogg identification header packet.
func ParseOpusHead(b []byte) (Head, error) {
	if len(b) < 19 || string(b[:8]) != "OpusHead" {
		return Head{}, fmt.Errorf("%w: no magic", ErrHead)
	}
	if b[8]>>4 != 0 { // major version 0 only
		return Head{}, fmt.Errorf("%w: version %d", ErrHead, b[8])
	}
	h := Head{
		Channels:        int(b[9]),
		PreSkip:         binary.LittleEndian.Uint16(b[10:]),
		InputSampleRate: binary.LittleEndian.Uint32(b[12:]),
		OutputGain:      int16(binary.LittleEndian.Uint16(b[16:])),
		MappingFamily:   b[18],
	}
	if h.Channels == 0 {
		return Head{}, fmt.Errorf("%w: zero channels", ErrHead)
	}
	if h.MappingFamily == 0 {
		if h.Channels > 2 {
			return Head{}, fmt.Errorf("%w: family 0 with %d channels", ErrHead, h.Channels)
		}
		return h, nil
	}
	if len(b) < 21+h.Channels {
		return Head{}, fmt.Errorf("%w: short channel mapping table", ErrHead)
	}
	h.StreamCount, h.CoupledCount = b[19], b[20]
	if h.StreamCount == 0 || h.CoupledCount > h.StreamCount {
		return Head{}, fmt.Errorf("%w: %d streams, %d coupled", ErrHead, h.StreamCount, h.CoupledCount)
	}
	h.ChannelMapping = append([]byte(nil), b[21:21+h.Channels]...)
	return h, nil
}
