// Package aac owns what Backchannel needs to know about MPEG-4 AAC audio:
// the AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1) that MP4 esds boxes and
// SDP config= carry, the mp4a.40.x codec string, ADTS frame headers (the
// framing of .aac files) and the RFC 3640 mpeg4-generic RTP depacketizer.
package aac

import (
	"errors"
	"fmt"

	"github.com/backchannel/backchannel/internal/codec/internal/bits"
)

// Audio object types (ISO/IEC 14496-3 Table 1.17) used by this package.
const (
	ObjectTypeAACMain = 1
	ObjectTypeAACLC   = 2
	ObjectTypeAACSSR  = 3
	ObjectTypeAACLTP  = 4
	ObjectTypeSBR     = 5 // HE-AAC
	ObjectTypeAACLD   = 23
	ObjectTypePS      = 29 // HE-AAC v2
	ObjectTypeAACELD  = 39
)

// sampleRates is the samplingFrequencyIndex table (Table 1.18).
var sampleRates = [13]int{96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350}

// ErrConfig is wrapped by every AudioSpecificConfig error.
var ErrConfig = errors.New("aac: invalid AudioSpecificConfig")

// Config is an AudioSpecificConfig for the general audio object types.
type Config struct {
	ObjectType int // 2 for AAC-LC; 5 or 29 when SBR/PS is signalled explicitly
	SampleRate int // of the core decoder
	// ChannelConfig is channelConfiguration, 1..7 (7 is 7.1, 8 channels).
	// 0, a program config element, is not supported.
	ChannelConfig int
	// FrameLength960 is frameLengthFlag: 960 instead of 1024 samples per
	// frame (480 instead of 512 for AAC-LD).
	FrameLength960 bool
	// With explicit SBR/PS signalling, the output sample rate and the
	// underlying core object type.
	ExtensionSampleRate int
	CoreObjectType      int
}

// Channels returns the number of output channels.
func (c Config) Channels() int {
	if c.ChannelConfig == 7 {
		return 8
	}
	return c.ChannelConfig
}

// SamplesPerFrame returns the PCM samples one access unit decodes to, at
// SampleRate: 1024 or 960 for AAC, 512 or 480 for AAC-LD/ELD.
func (c Config) SamplesPerFrame() int {
	core := c.ObjectType
	if core == ObjectTypeSBR || core == ObjectTypePS {
		core = c.CoreObjectType
	}
	n := 1024
	if core == ObjectTypeAACLD || core == ObjectTypeAACELD {
		n = 512
	}
	if c.FrameLength960 {
		n = n * 15 / 16
	}
	return n
}

// CodecString returns the RFC 6381 codecs parameter, mp4a.40.<object type>.
func (c Config) CodecString() string { return fmt.Sprintf("mp4a.40.%d", c.ObjectType) }

func readObjectType(r *bits.Reader) int {
	t := int(r.U(5))
	if t == 31 {
		t = 32 + int(r.U(6))
	}
	return t
}

func readSampleRate(r *bits.Reader) (int, error) {
	idx := r.U(4)
	if idx == 0xF {
		rate := int(r.U(24))
		if rate == 0 {
			return 0, fmt.Errorf("%w: explicit sample rate 0", ErrConfig)
		}
		return rate, nil
	}
	if int(idx) >= len(sampleRates) {
		return 0, fmt.Errorf("%w: reserved sampling frequency index %d", ErrConfig, idx)
	}
	return sampleRates[idx], nil
}

// gaObjectType reports whether t is a general audio type whose
// GASpecificConfig this package reads (ER BSAC, 22, adds fields it does not).
func gaObjectType(t int) bool {
	switch t {
	case 1, 2, 3, 4, 6, 7, 17, 19, 20, 21, 23:
		return true
	}
	return false
}

// Unmarshal parses an AudioSpecificConfig.
func (c *Config) Unmarshal(b []byte) error {
	r := bits.NewReader(b)
	*c = Config{}
	c.ObjectType = readObjectType(r)
	var err error
	if c.SampleRate, err = readSampleRate(r); err != nil {
		return err
	}
	c.ChannelConfig = int(r.U(4))
	core := c.ObjectType
	if c.ObjectType == ObjectTypeSBR || c.ObjectType == ObjectTypePS {
		if c.ExtensionSampleRate, err = readSampleRate(r); err != nil {
			return err
		}
		c.CoreObjectType = readObjectType(r)
		core = c.CoreObjectType
	}
	if err := r.Err(); err != nil {
		return fmt.Errorf("%w: %v", ErrConfig, err)
	}
	if !gaObjectType(core) {
		return fmt.Errorf("%w: unsupported audio object type %d", ErrConfig, core)
	}
	if c.ChannelConfig == 0 || c.ChannelConfig > 7 {
		return fmt.Errorf("%w: unsupported channel configuration %d", ErrConfig, c.ChannelConfig)
	}
	// GASpecificConfig: frameLengthFlag, dependsOnCoreCoder, extensionFlag.
	c.FrameLength960 = r.Flag()
	if r.Flag() {
		r.Skip(14) // coreCoderDelay
	}
	r.Skip(1)
	if err := r.Err(); err != nil {
		return fmt.Errorf("%w: %v", ErrConfig, err)
	}
	return nil
}

// Marshal encodes the config. Sample rates outside the index table are
// written explicitly.
func (c Config) Marshal() ([]byte, error) {
	if c.ObjectType <= 0 || c.ObjectType > 95 || c.SampleRate <= 0 || c.SampleRate >= 1<<24 ||
		c.ChannelConfig <= 0 || c.ChannelConfig > 7 {
		return nil, fmt.Errorf("%w: cannot encode %+v", ErrConfig, c)
	}
	var w bitWriter
	writeObjectType(&w, c.ObjectType)
	writeSampleRate(&w, c.SampleRate)
	w.put(uint64(c.ChannelConfig), 4)
	if c.ObjectType == ObjectTypeSBR || c.ObjectType == ObjectTypePS {
		if c.ExtensionSampleRate <= 0 || c.ExtensionSampleRate >= 1<<24 || c.CoreObjectType <= 0 {
			return nil, fmt.Errorf("%w: SBR/PS needs an extension sample rate and core object type", ErrConfig)
		}
		writeSampleRate(&w, c.ExtensionSampleRate)
		writeObjectType(&w, c.CoreObjectType)
	}
	flag := uint64(0)
	if c.FrameLength960 {
		flag = 1
	}
	w.put(flag, 1)
	w.put(0, 2) // dependsOnCoreCoder, extensionFlag
	return w.bytes(), nil
}

func writeObjectType(w *bitWriter, t int) {
	if t >= 31 {
		w.put(31, 5)
		w.put(uint64(t-32), 6)
		return
	}
	w.put(uint64(t), 5)
}

func writeSampleRate(w *bitWriter, rate int) {
	for i, r := range sampleRates {
		if r == rate {
			w.put(uint64(i), 4)
			return
		}
	}
	w.put(0xF, 4)
	w.put(uint64(rate), 24)
}

// bitWriter writes MSB first.
type bitWriter struct {
	buf []byte
	n   int // bits written
}

func (w *bitWriter) put(v uint64, n int) {
	for i := n - 1; i >= 0; i-- {
		if w.n%8 == 0 {
			w.buf = append(w.buf, 0)
		}
		if v>>i&1 == 1 {
			w.buf[len(w.buf)-1] |= 0x80 >> (w.n % 8)
		}
		w.n++
	}
}

func (w *bitWriter) bytes() []byte { return w.buf }
