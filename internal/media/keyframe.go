package media

import "github.com/pion/rtp/codecs"

// H.264 NAL unit types (RFC 6184 §5.2 and ITU-T H.264 Table 7-1) that
// keyframe detection looks at.
const (
	h264NALIDR   = 5
	h264NALSPS   = 7
	h264NALPPS   = 8
	h264NALSTAPA = 24
	h264NALSTAPB = 25
	h264NALFUA   = 28
	h264NALFUB   = 29
)

// H.265 NAL unit types (RFC 7798 §4.4 and ITU-T H.265 Table 7-1).
const (
	h265NALIRAPFirst = 16 // BLA_W_LP
	h265NALIRAPLast  = 21 // CRA_NUT; 22 and 23 are reserved IRAP types
	h265NALVPS       = 32
	h265NALSPS       = 33
	h265NALPPS       = 34
	h265NALAP        = 48
	h265NALFU        = 49
)

// IsKeyframe reports whether an RTP payload of the given codec carries the
// start of a keyframe: for H.264 an IDR slice (single NAL unit, inside a
// STAP-A/STAP-B aggregate, or the first fragment of an FU-A/FU-B), for
// H.265 an IRAP picture (IDR, CRA, BLA) the same ways, for VP8 the first
// packet of a key frame. Other codecs never report keyframes.
func IsKeyframe(mime string, payload []byte) bool {
	c := Codec{MimeType: mime}
	switch {
	case c.Is(MimeH264):
		return H264Keyframe(payload)
	case c.Is(MimeH265):
		return H265Keyframe(payload)
	case c.Is(MimeVP8):
		return VP8Keyframe(payload)
	}
	return false
}

// H265Keyframe reports whether an H.265 RTP payload (RFC 7798) starts or
// contains an IRAP picture.
func H265Keyframe(payload []byte) bool {
	_, irap := h265Scan(payload)
	return irap
}

func h265IRAP(typ byte) bool { return typ >= h265NALIRAPFirst && typ <= 23 }

// h265Scan reports whether the payload carries a VPS or SPS and whether it
// carries the start of an IRAP picture. Aggregation packets with decoding
// order numbers (sprop-max-don-diff > 0) are not understood and read as
// nothing.
func h265Scan(payload []byte) (params, irap bool) {
	if len(payload) < 2 {
		return false, false
	}
	switch typ := payload[0] >> 1 & 0x3f; {
	case typ == h265NALAP:
		rest := payload[2:]
		for len(rest) >= 2 {
			size := int(rest[0])<<8 | int(rest[1])
			rest = rest[2:]
			if size < 2 || size > len(rest) {
				break
			}
			switch t := rest[0] >> 1 & 0x3f; {
			case t == h265NALVPS || t == h265NALSPS:
				params = true
			case h265IRAP(t):
				irap = true
			}
			rest = rest[size:]
		}
		return params, irap
	case typ == h265NALFU:
		if len(payload) < 3 {
			return false, false
		}
		return false, payload[2]&0x80 != 0 && h265IRAP(payload[2]&0x3f)
	case typ == h265NALVPS || typ == h265NALSPS:
		return true, false
	case h265IRAP(typ):
		return false, true
	}
	return false, false
}

// H264Keyframe reports whether an H.264 RTP payload (RFC 6184) starts or
// contains an IDR slice.
func H264Keyframe(payload []byte) bool {
	_, idr := h264Scan(payload)
	return idr
}

// h264Scan reports whether the payload carries a sequence parameter set and
// whether it carries the start of an IDR slice. Malformed aggregates are
// read up to the first inconsistent length and no further.
func h264Scan(payload []byte) (sps, idr bool) {
	if len(payload) < 1 {
		return false, false
	}
	switch typ := payload[0] & 0x1f; typ {
	case h264NALSTAPA, h264NALSTAPB:
		rest := payload[1:]
		if typ == h264NALSTAPB {
			if len(rest) < 2 { // decoding order number
				return false, false
			}
			rest = rest[2:]
		}
		for len(rest) >= 2 {
			size := int(rest[0])<<8 | int(rest[1])
			rest = rest[2:]
			if size == 0 || size > len(rest) {
				break
			}
			switch rest[0] & 0x1f {
			case h264NALSPS:
				sps = true
			case h264NALIDR:
				idr = true
			}
			rest = rest[size:]
		}
		return sps, idr
	case h264NALFUA, h264NALFUB:
		if len(payload) < 2 {
			return false, false
		}
		start := payload[1]&0x80 != 0
		return false, start && payload[1]&0x1f == h264NALIDR
	case h264NALSPS:
		return true, false
	case h264NALIDR:
		return false, true
	}
	return false, false
}

// VP8Keyframe reports whether a VP8 RTP payload (RFC 7741) is the first
// packet of a key frame.
func VP8Keyframe(payload []byte) bool {
	var p codecs.VP8Packet
	if _, err := p.Unmarshal(payload); err != nil {
		return false
	}
	// The frame header's P bit (inverse key frame flag) is only present in
	// the first packet of partition 0.
	return p.S == 1 && p.PID == 0 && len(p.Payload) > 0 && p.Payload[0]&0x01 == 0
}

// startDetector marks the packets where a decoder can begin: the first
// packet of a keyframe's access unit. For H.264 that is the packet carrying
// the SPS ahead of an IDR (decoders need the parameter sets first) or, when
// the encoder sends no parameter sets in-band for that frame, the first IDR
// packet; H.265 is alike with VPS/SPS and IRAP pictures. Packets of one
// access unit share an RTP timestamp.
type startDetector struct {
	mime    string
	h264    bool
	h265    bool
	vp8     bool
	auTS    uint32
	inAU    bool
	auStart bool // this access unit already produced a start point
}

func newStartDetector(c Codec) startDetector {
	return startDetector{mime: c.MimeType, h264: c.Is(MimeH264), h265: c.Is(MimeH265), vp8: c.Is(MimeVP8)}
}

// keyed reports whether the codec has decoder start points to wait for.
func (d *startDetector) keyed() bool { return d.h264 || d.h265 || d.vp8 }

// start reports whether a decoder may start at this packet. It must see the
// packets of a source in arrival order.
func (d *startDetector) start(ts uint32, payload []byte) bool {
	switch {
	case d.vp8:
		return VP8Keyframe(payload)
	case !d.h264 && !d.h265:
		return false
	}
	if !d.inAU || ts != d.auTS {
		d.auTS, d.inAU, d.auStart = ts, true, false
	}
	if d.auStart {
		return false
	}
	var sps, idr bool
	if d.h264 {
		sps, idr = h264Scan(payload)
	} else {
		sps, idr = h265Scan(payload)
	}
	if sps || idr {
		d.auStart = true
		return true
	}
	return false
}

func (d *startDetector) reset() { d.inAU, d.auStart = false, false }
