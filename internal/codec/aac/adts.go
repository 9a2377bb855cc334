package aac

import (
	"errors"
	"fmt"
)

// ErrADTS is wrapped by every ADTS parsing error.
var ErrADTS = errors.New("aac: invalid ADTS frame")

// ADTSFrame is one frame of an ADTS stream: the raw access unit and the
// configuration its header declares.
type ADTSFrame struct {
	Config Config
	AU     []byte
}

// ParseADTS parses the ADTS frame at the start of b and returns it with its
// total length (header included). Frames with several raw data blocks are
// refused.
func ParseADTS(b []byte) (ADTSFrame, int, error) {
	if len(b) < 7 {
		return ADTSFrame{}, 0, fmt.Errorf("%w: short header", ErrADTS)
	}
	if b[0] != 0xFF || b[1]&0xF6 != 0xF0 { // syncword, layer 0
		return ADTSFrame{}, 0, fmt.Errorf("%w: no syncword", ErrADTS)
	}
	protectionAbsent := b[1]&1 == 1
	profile := int(b[2] >> 6)
	sfi := int(b[2] >> 2 & 0xF)
	channels := int(b[2]&1)<<2 | int(b[3]>>6)
	length := int(b[3]&3)<<11 | int(b[4])<<3 | int(b[5]>>5)
	blocks := int(b[6]&3) + 1
	if sfi >= len(sampleRates) {
		return ADTSFrame{}, 0, fmt.Errorf("%w: reserved sampling frequency index %d", ErrADTS, sfi)
	}
	if channels == 0 {
		return ADTSFrame{}, 0, fmt.Errorf("%w: channel configuration in the stream (PCE) unsupported", ErrADTS)
	}
	if blocks != 1 {
		return ADTSFrame{}, 0, fmt.Errorf("%w: %d raw data blocks in a frame unsupported", ErrADTS, blocks)
	}
	header := 7
	if !protectionAbsent {
		header = 9
	}
	if length < header || length > len(b) {
		return ADTSFrame{}, 0, fmt.Errorf("%w: frame length %d", ErrADTS, length)
	}
	return ADTSFrame{
		Config: Config{ObjectType: profile + 1, SampleRate: sampleRates[sfi], ChannelConfig: channels},
		AU:     b[header:length],
	}, length, nil
}

// SplitADTS splits a whole ADTS stream into frames; the access units alias b.
func SplitADTS(b []byte) ([]ADTSFrame, error) {
	var out []ADTSFrame
	for len(b) > 0 {
		f, n, err := ParseADTS(b)
		if err != nil {
			return out, err
		}
		out = append(out, f)
		b = b[n:]
	}
	return out, nil
}
