package rtsp

import (
	"encoding/base64"
	"errors"

	"github.com/pion/rtp"

	"github.com/backchannel/backchannel/internal/codec/h264"
)

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// maxH264Payload bounds the RTP payloads the H.264 normalizer emits, so
// that packets fit a WebRTC viewer's path MTU once SRTP is added (encoders
// sending over RTSP use up to 1460-byte payloads).
const maxH264Payload = 1200

// h264Normalizer turns an RTSP publisher's H.264 RTP stream into one every
// egress can use as it is: it reassembles access units (single NAL units,
// STAP-A, FU-A; reordering and losses handled by h264.Depacketizer), puts
// the SPS and PPS ahead of every IDR picture that lacks them in band
// (encoders behind RTSP usually send them only in the SDP, and WebRTC
// decoders need them in band), and packetizes again in mode 1 with
// payloads of at most maxH264Payload bytes. Timestamps are kept; sequence
// numbers are its own, with a gap where an access unit was lost so that
// receivers see the loss.
type h264Normalizer struct {
	depack   h264.Depacketizer
	sps, pps []byte
	seq      uint16
	skip     bool // leave a sequence gap before the next packet

	out     []rtp.Packet
	scratch []byte
}

func newH264Normalizer(sps, pps []byte, firstSeq uint16) *h264Normalizer {
	return &h264Normalizer{sps: sps, pps: pps, seq: firstSeq}
}

// push adds one publisher packet and returns the packets to forward, valid
// until the next call. The packet's payload must not be reused: the
// depacketizer keeps references to it.
func (n *h264Normalizer) push(p *rtp.Packet) ([]rtp.Packet, error) {
	aus, err := n.depack.Push(p)
	if err != nil {
		n.skip = true
	}
	n.out = n.out[:0]
	n.scratch = n.scratch[:0]
	for _, au := range aus {
		n.emit(&p.Header, au)
	}
	if err != nil && !errors.Is(err, h264.ErrPacketLoss) {
		return n.out, err
	}
	return n.out, nil
}

// Stats returns the depacketizer's counters.
func (n *h264Normalizer) stats() h264.DepacketizerStats { return n.depack.Stats() }

func (n *h264Normalizer) emit(tmpl *rtp.Header, au h264.AccessUnit) {
	idr, hasSPS, hasPPS := false, false, false
	for _, nalu := range au.NALUs {
		switch h264.TypeOf(nalu) {
		case h264.NALUTypeIDR:
			idr = true
		case h264.NALUTypeSPS:
			hasSPS = true
			n.sps = append(n.sps[:0:0], nalu...)
		case h264.NALUTypePPS:
			hasPPS = true
			n.pps = append(n.pps[:0:0], nalu...)
		}
	}
	ts := uint32(au.PTS)
	start := len(n.out)
	if idr && (!hasSPS || !hasPPS) && n.sps != nil && n.pps != nil {
		n.aggregate(tmpl, ts, n.sps, n.pps)
	}
	for _, nalu := range au.NALUs {
		switch h264.TypeOf(nalu) {
		case h264.NALUTypeAUD, h264.NALUTypeFiller:
			continue // nothing a decoder needs, on any egress
		}
		n.single(tmpl, ts, nalu)
	}
	if len(n.out) > start {
		n.out[len(n.out)-1].Marker = true
	}
}

func (n *h264Normalizer) header(tmpl *rtp.Header, ts uint32) rtp.Header {
	if n.skip {
		n.seq++
		n.skip = false
	}
	h := rtp.Header{Version: 2, PayloadType: tmpl.PayloadType, SSRC: tmpl.SSRC, SequenceNumber: n.seq, Timestamp: ts}
	n.seq++
	return h
}

// aggregate emits a STAP-A of the parameter sets.
func (n *h264Normalizer) aggregate(tmpl *rtp.Header, ts uint32, nalus ...[]byte) {
	size := 1
	nri := byte(0)
	for _, u := range nalus {
		size += 2 + len(u)
		nri = max(nri, u[0]&0x60)
	}
	if size > maxH264Payload {
		for _, u := range nalus {
			n.single(tmpl, ts, u)
		}
		return
	}
	b := n.alloc(size)
	b[0] = nri | 24
	i := 1
	for _, u := range nalus {
		b[i], b[i+1] = byte(len(u)>>8), byte(len(u))
		i += 2 + copy(b[i+2:], u)
	}
	n.out = append(n.out, rtp.Packet{Header: n.header(tmpl, ts), Payload: b})
}

// single emits one NAL unit whole, or as FU-A fragments.
func (n *h264Normalizer) single(tmpl *rtp.Header, ts uint32, nalu []byte) {
	if len(nalu) == 0 {
		return
	}
	if len(nalu) <= maxH264Payload {
		n.out = append(n.out, rtp.Packet{Header: n.header(tmpl, ts), Payload: nalu})
		return
	}
	indicator := nalu[0]&0xe0 | 28
	typ := nalu[0] & 0x1f
	rest := nalu[1:]
	first := true
	for len(rest) > 0 {
		chunk := min(len(rest), maxH264Payload-2)
		b := n.alloc(2 + chunk)
		b[0] = indicator
		b[1] = typ
		if first {
			b[1] |= 0x80
		}
		if chunk == len(rest) {
			b[1] |= 0x40
		}
		copy(b[2:], rest[:chunk])
		rest = rest[chunk:]
		first = false
		n.out = append(n.out, rtp.Packet{Header: n.header(tmpl, ts), Payload: b})
	}
}

// alloc returns size bytes of the scratch buffer. The buffer only grows
// between calls to push; slices handed out earlier in the same call stay
// valid because a grown buffer is a new array.
func (n *h264Normalizer) alloc(size int) []byte {
	if cap(n.scratch)-len(n.scratch) < size {
		n.scratch = make([]byte, 0, max(2*cap(n.scratch), size, 64<<10))
	}
	start := len(n.scratch)
	n.scratch = n.scratch[:start+size]
	return n.scratch[start : start+size : start+size]
}
