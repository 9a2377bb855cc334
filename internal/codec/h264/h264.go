// Package h264 owns what Backchannel needs to know about H.264/AVC
// bitstreams: NAL unit types, the Annex B byte-stream and AVCC
// (length-prefixed) formats, sequence parameter set parsing, keyframe
// detection, the RFC 6184 sprop-parameter-sets, an RTP depacketizer that
// assembles access units (RFC 6184 single NAL unit, STAP-A and FU-A
// packets), and a DTS extractor that gives access units decode timestamps
// suitable for fMP4 when B-frames reorder them.
//
// Timestamps are in the 90 kHz RTP clock throughout.
package h264

import "fmt"

// NALUType is the nal_unit_type of an H.264 NAL unit (Table 7-1) or, for
// 24..29, an RFC 6184 payload structure.
type NALUType uint8

// NAL unit types used by this package.
const (
	NALUTypeNonIDR    NALUType = 1  // coded slice of a non-IDR picture
	NALUTypeDataA     NALUType = 2  // coded slice data partition A
	NALUTypeDataB     NALUType = 3  // coded slice data partition B
	NALUTypeDataC     NALUType = 4  // coded slice data partition C
	NALUTypeIDR       NALUType = 5  // coded slice of an IDR picture
	NALUTypeSEI       NALUType = 6  // supplemental enhancement information
	NALUTypeSPS       NALUType = 7  // sequence parameter set
	NALUTypePPS       NALUType = 8  // picture parameter set
	NALUTypeAUD       NALUType = 9  // access unit delimiter
	NALUTypeEndOfSeq  NALUType = 10 // end of sequence
	NALUTypeEndOfStrm NALUType = 11 // end of stream
	NALUTypeFiller    NALUType = 12 // filler data
	NALUTypeSPSExt    NALUType = 13 // sequence parameter set extension
	NALUTypePrefix    NALUType = 14 // prefix NAL unit (SVC)
	NALUTypeSubsetSPS NALUType = 15 // subset sequence parameter set
	NALUTypeSTAPA     NALUType = 24 // RFC 6184 single-time aggregation packet A
	NALUTypeSTAPB     NALUType = 25 // RFC 6184 single-time aggregation packet B
	NALUTypeMTAP16    NALUType = 26 // RFC 6184 multi-time aggregation packet, 16-bit offsets
	NALUTypeMTAP24    NALUType = 27 // RFC 6184 multi-time aggregation packet, 24-bit offsets
	NALUTypeFUA       NALUType = 28 // RFC 6184 fragmentation unit A
	NALUTypeFUB       NALUType = 29 // RFC 6184 fragmentation unit B
)

var naluTypeNames = map[NALUType]string{
	NALUTypeNonIDR: "NonIDR", NALUTypeDataA: "DataA", NALUTypeDataB: "DataB",
	NALUTypeDataC: "DataC", NALUTypeIDR: "IDR", NALUTypeSEI: "SEI", NALUTypeSPS: "SPS",
	NALUTypePPS: "PPS", NALUTypeAUD: "AUD", NALUTypeEndOfSeq: "EndOfSeq",
	NALUTypeEndOfStrm: "EndOfStream", NALUTypeFiller: "Filler", NALUTypeSPSExt: "SPSExt",
	NALUTypePrefix: "Prefix", NALUTypeSubsetSPS: "SubsetSPS", NALUTypeSTAPA: "STAP-A",
	NALUTypeSTAPB: "STAP-B", NALUTypeMTAP16: "MTAP16", NALUTypeMTAP24: "MTAP24",
	NALUTypeFUA: "FU-A", NALUTypeFUB: "FU-B",
}

func (t NALUType) String() string {
	if s, ok := naluTypeNames[t]; ok {
		return s
	}
	return fmt.Sprintf("NALUType(%d)", uint8(t))
}

// TypeOf returns the type of a NAL unit; an empty unit yields 0.
func TypeOf(nalu []byte) NALUType {
	if len(nalu) == 0 {
		return 0
	}
	return NALUType(nalu[0] & 0x1F)
}

// IsVCL reports whether t carries coded slice data.
func (t NALUType) IsVCL() bool { return t >= NALUTypeNonIDR && t <= NALUTypeIDR }

// IsKeyframe reports whether an access unit holds an IDR picture, the point
// where a decoder can start.
func IsKeyframe(au [][]byte) bool {
	for _, n := range au {
		if TypeOf(n) == NALUTypeIDR {
			return true
		}
	}
	return false
}

// startsPicture reports whether a slice NAL unit is the first slice of its
// picture (first_mb_in_slice == 0, which ue(v) codes as a single 1 bit).
func startsPicture(nalu []byte) bool {
	return len(nalu) >= 2 && nalu[1]&0x80 != 0
}
