package h264

import (
	"encoding/binary"
	"errors"
)

// ErrAVCC is returned for a length-prefixed buffer whose lengths do not add up.
var ErrAVCC = errors.New("h264: malformed AVCC length-prefixed data")

// SplitAnnexB splits an Annex B byte stream into NAL units, without their
// start codes. Both 3- and 4-byte start codes are recognised, bytes before
// the first start code are ignored, and trailing zero bytes of a unit
// (trailing_zero_8bits) are dropped. The units alias b.
//
// The byte-stream format is the same for H.265, which uses this function.
func SplitAnnexB(b []byte) [][]byte {
	var out [][]byte
	start := -1
	i := 0
	for i+2 < len(b) {
		if b[i+2] > 1 {
			i += 3 // b[i+2] > 1 rules out a start code beginning at i, i+1 or i+2
			continue
		}
		if b[i] == 0 && b[i+1] == 0 && b[i+2] == 1 {
			if start >= 0 {
				out = appendUnit(out, b[start:i])
			}
			i += 3
			start = i
			continue
		}
		i++
	}
	if start >= 0 {
		out = appendUnit(out, b[start:])
	}
	return out
}

func appendUnit(out [][]byte, u []byte) [][]byte {
	for len(u) > 0 && u[len(u)-1] == 0 {
		u = u[:len(u)-1]
	}
	if len(u) == 0 {
		return out
	}
	return append(out, u)
}

// AppendAnnexB appends the NAL units to dst, each after a 4-byte start code.
func AppendAnnexB(dst []byte, nalus [][]byte) []byte {
	for _, n := range nalus {
		dst = append(dst, 0, 0, 0, 1)
		dst = append(dst, n...)
	}
	return dst
}

// AppendAVCC appends the NAL units to dst, each after its 4-byte big-endian
// length: the sample format of avc1/hvc1 tracks in MP4.
func AppendAVCC(dst []byte, nalus [][]byte) []byte {
	for _, n := range nalus {
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(n)))
		dst = append(dst, n...)
	}
	return dst
}

// AVCCSize returns the size AppendAVCC adds for nalus.
func AVCCSize(nalus [][]byte) int {
	n := 0
	for _, u := range nalus {
		n += 4 + len(u)
	}
	return n
}

// SplitAVCC splits a buffer of 4-byte length-prefixed NAL units. The units
// alias b. At most maxUnits units are returned (0 means no limit) so that a
// hostile buffer of empty units cannot make it allocate without bound.
func SplitAVCC(b []byte, maxUnits int) ([][]byte, error) {
	var out [][]byte
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, ErrAVCC
		}
		n := binary.BigEndian.Uint32(b)
		b = b[4:]
		if uint64(n) > uint64(len(b)) {
			return nil, ErrAVCC
		}
		if maxUnits > 0 && len(out) == maxUnits {
			return nil, ErrAVCC
		}
		out = append(out, b[:n])
		b = b[n:]
	}
	return out, nil
}

// SplitAccessUnits groups NAL units of an Annex B stream, in decode order,
// into access units by the rules of H.264 7.4.1.2.3: an access unit
// delimiter, SPS, PPS, SEI or types 14..18 after a picture's slices, or a
// slice with first_mb_in_slice == 0 after a picture's slices, begins the
// next access unit. Streams with arbitrary slice order are not supported.
func SplitAccessUnits(nalus [][]byte) [][][]byte {
	var out [][][]byte
	var cur [][]byte
	hasSlice := false
	for _, n := range nalus {
		t := TypeOf(n)
		begins := false
		switch {
		case t == NALUTypeAUD || t == NALUTypeSPS || t == NALUTypePPS || t == NALUTypeSEI ||
			(t >= 14 && t <= 18):
			begins = hasSlice
		case t.IsVCL():
			begins = hasSlice && startsPicture(n)
		}
		if begins {
			out = append(out, cur)
			cur, hasSlice = nil, false
		}
		cur = append(cur, n)
		if t.IsVCL() {
			hasSlice = true
		}
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}
