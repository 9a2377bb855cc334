package media

import "github.com/pion/rtp/codecs"

// H.264 NAL unit types (RFC 6184 §5.2 and ITU-T H.264 Table 7-1) that
// keyframe detection looks at.
const (
	h264NALIDR   = 5
	h264NALSPS   = 7
	h264NALSTAPA = 24
	h264NALSTAPB = 25
	h264NALFUA   = 28
	h264NALFUB   = 29
)

// IsKeyframe reports whether an RTP payload of the given codec carries the
// start of a keyframe: for H.264 an IDR slice (single NAL unit, inside a
// STAP-A/STAP-B aggregate, or the first fragment of an FU-A/FU-B), for VP8
// the first packet of a key frame. Other codecs never report keyframes.
func IsKeyframe(mime string, payload []byte) bool {
	c := Codec{MimeType: mime}
	switch {
	case c.Is(MimeH264):
		return H264Keyframe(payload)
	case c.Is(MimeVP8):
		return VP8Keyframe(payload)
	}
	return false
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
// packet. Packets of one access unit share an RTP timestamp.
type startDetector struct {
	mime    string
	h264    bool
	vp8     bool
	auTS    uint32
	inAU    bool
	auStart bool // this access unit already produced a start point
}

func newStartDetector(c Codec) startDetector {
	return startDetector{mime: c.MimeType, h264: c.Is(MimeH264), vp8: c.Is(MimeVP8)}
}

// start reports whether a decoder may start at this packet. It must see the
// packets of a source in arrival order.
func (d *startDetector) start(ts uint32, payload []byte) bool {
	switch {
	case d.vp8:
		return VP8Keyframe(payload)
	case !d.h264:
		return false
	}
	if !d.inAU || ts != d.auTS {
		d.auTS, d.inAU, d.auStart = ts, true, false
	}
	if d.auStart {
		return false
	}
	sps, idr := h264Scan(payload)
	if sps || idr {
		d.auStart = true
		return true
	}
	return false
}

func (d *startDetector) reset() { d.inAU, d.auStart = false, false }
