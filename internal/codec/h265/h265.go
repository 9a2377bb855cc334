// Package h265 owns what Backchannel needs to know about H.265/HEVC
// bitstreams: NAL unit types, VPS/SPS/PPS parsing (size, frame rate,
// profile/tier/level for the hvc1 codec string), random-access (IRAP)
// detection, the RFC 7798 sprop-vps/sps/pps parameters, an RTP
// depacketizer (single NAL unit, aggregation and fragmentation units) and
// a DTS extractor for streams that reorder pictures.
//
// The Annex B byte stream and the 4-byte length-prefixed sample format are
// the same as H.264's; SplitAnnexB and AppendAVCC here are those of
// package h264. Timestamps are in the 90 kHz RTP clock throughout.
package h265

import (
	"fmt"

	"github.com/backchannel/backchannel/internal/codec/h264"
)

// NALUType is the nal_unit_type of an H.265 NAL unit (Table 7-1) or, for
// 48..50, an RFC 7798 payload structure.
type NALUType uint8

// NAL unit types used by this package.
const (
	NALUTypeTrailN    NALUType = 0
	NALUTypeTrailR    NALUType = 1
	NALUTypeRASLN     NALUType = 8
	NALUTypeRASLR     NALUType = 9
	NALUTypeBLAWLP    NALUType = 16
	NALUTypeBLAWRADL  NALUType = 17
	NALUTypeBLANLP    NALUType = 18
	NALUTypeIDRWRADL  NALUType = 19
	NALUTypeIDRNLP    NALUType = 20
	NALUTypeCRA       NALUType = 21
	NALUTypeVPS       NALUType = 32
	NALUTypeSPS       NALUType = 33
	NALUTypePPS       NALUType = 34
	NALUTypeAUD       NALUType = 35
	NALUTypeEOS       NALUType = 36
	NALUTypeEOB       NALUType = 37
	NALUTypeFiller    NALUType = 38
	NALUTypePrefixSEI NALUType = 39
	NALUTypeSuffixSEI NALUType = 40
	NALUTypeAP        NALUType = 48 // RFC 7798 aggregation packet
	NALUTypeFU        NALUType = 49 // RFC 7798 fragmentation unit
	NALUTypePACI      NALUType = 50 // RFC 7798 PACI packet
)

var naluTypeNames = map[NALUType]string{
	NALUTypeTrailN: "TRAIL_N", NALUTypeTrailR: "TRAIL_R", NALUTypeRASLN: "RASL_N",
	NALUTypeRASLR: "RASL_R", NALUTypeBLAWLP: "BLA_W_LP", NALUTypeBLAWRADL: "BLA_W_RADL",
	NALUTypeBLANLP: "BLA_N_LP", NALUTypeIDRWRADL: "IDR_W_RADL", NALUTypeIDRNLP: "IDR_N_LP",
	NALUTypeCRA: "CRA", NALUTypeVPS: "VPS", NALUTypeSPS: "SPS", NALUTypePPS: "PPS",
	NALUTypeAUD: "AUD", NALUTypeEOS: "EOS", NALUTypeEOB: "EOB", NALUTypeFiller: "FD",
	NALUTypePrefixSEI: "PREFIX_SEI", NALUTypeSuffixSEI: "SUFFIX_SEI", NALUTypeAP: "AP",
	NALUTypeFU: "FU", NALUTypePACI: "PACI",
}

func (t NALUType) String() string {
	if s, ok := naluTypeNames[t]; ok {
		return s
	}
	return fmt.Sprintf("NALUType(%d)", uint8(t))
}

// TypeOf returns the type of a NAL unit; a unit shorter than its 2-byte
// header yields 63, a type no coded data uses.
func TypeOf(nalu []byte) NALUType {
	if len(nalu) < 2 {
		return 63
	}
	return NALUType(nalu[0] >> 1 & 0x3F)
}

// IsVCL reports whether t carries coded slice data.
func (t NALUType) IsVCL() bool { return t < 32 }

// IsIRAP reports whether t is an intra random access point picture (BLA,
// IDR or CRA), where a decoder can start.
func (t NALUType) IsIRAP() bool { return t >= 16 && t <= 23 }

// IsKeyframe reports whether an access unit holds an IRAP picture.
func IsKeyframe(au [][]byte) bool {
	for _, n := range au {
		if TypeOf(n).IsIRAP() {
			return true
		}
	}
	return false
}

// startsPicture reports whether a slice segment is the first of its
// picture (first_slice_segment_in_pic_flag, the bit after the header).
func startsPicture(nalu []byte) bool { return len(nalu) >= 3 && nalu[2]&0x80 != 0 }

// SplitAnnexB splits an Annex B byte stream into NAL units (h264.SplitAnnexB).
func SplitAnnexB(b []byte) [][]byte { return h264.SplitAnnexB(b) }

// AppendAVCC appends NAL units with 4-byte length prefixes, the hvc1 sample
// format (h264.AppendAVCC).
func AppendAVCC(dst []byte, nalus [][]byte) []byte { return h264.AppendAVCC(dst, nalus) }

// SplitAccessUnits groups NAL units of an Annex B stream, in decode order,
// into access units (H.265 7.4.2.4.4): after a picture's slices, an access
// unit delimiter, a VPS, SPS, PPS, prefix SEI or a type 41..44 or 48..55
// unit, or a slice segment with first_slice_segment_in_pic_flag, begins
// the next access unit.
func SplitAccessUnits(nalus [][]byte) [][][]byte {
	var out [][][]byte
	var cur [][]byte
	hasSlice := false
	for _, n := range nalus {
		t := TypeOf(n)
		begins := false
		switch {
		case t == NALUTypeAUD || t == NALUTypeVPS || t == NALUTypeSPS || t == NALUTypePPS ||
			t == NALUTypePrefixSEI || (t >= 41 && t <= 44) || (t >= 48 && t <= 55):
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
