package rtsp

import (
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/backchannel/backchannel/internal/codec/h264"
	"github.com/backchannel/backchannel/internal/media"
)

// trackInput feeds one stream track from an RTSP source: a publishing
// client or a server this node pulls from.
type trackInput struct {
	desc Media

	mu     sync.Mutex
	writer *media.TrackWriter
	h264   *h264Normalizer
	// The source's SSRC, once seen, for keyframe requests. Atomic: the
	// stream asks for a keyframe from inside writeRTP (a new source's
	// first frames are deltas), with mu held.
	ssrc atomic.Uint32

	packets, bytes prometheus.Counter
	dropped        prometheus.Counter
}

func newTrackInput(d Media, m *metrics) *trackInput {
	in := &trackInput{desc: d}
	if m != nil {
		in.packets = m.packetsIn.WithLabelValues(string(d.Kind))
		in.bytes = m.bytesIn.WithLabelValues(string(d.Kind))
		in.dropped = m.dropped.WithLabelValues("malformed")
	}
	if d.Codec.Is(media.MimeH264) {
		var sps, pps []byte
		if f, err := h264.ParseFMTP(d.Codec.Fmtp); err == nil {
			sps, pps = f.SPS, f.PPS
		}
		in.h264 = newH264Normalizer(sps, pps, uint16(rand.Uint32()))
	}
	return in
}

// registryCodec is the codec the stream track gets: the SDP's, except that
// H.264 is always sent on in packetization mode 1 (the normalizer's
// output, whatever the source used).
func (in *trackInput) registryCodec() media.Codec {
	c := in.desc.Codec
	if in.h264 != nil {
		c.Fmtp = media.WithFmtpParam(c.Fmtp, "packetization-mode", "1")
	}
	return c
}

func (in *trackInput) attach(w *media.TrackWriter) {
	in.mu.Lock()
	in.writer = w
	in.mu.Unlock()
}

// writeRTP handles one RTP packet from the source. The payload must be a
// buffer of its own (the H.264 path keeps references to it). It returns
// media.ErrReplaced once the publication lost its stream.
func (in *trackInput) writeRTP(b []byte) error {
	var p rtp.Packet
	if err := p.Unmarshal(b); err != nil {
		if in.dropped != nil {
			in.dropped.Inc()
		}
		return nil
	}
	if in.packets != nil {
		in.packets.Inc()
		in.bytes.Add(float64(len(b)))
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	in.ssrc.Store(p.SSRC)
	if in.writer == nil {
		return nil
	}
	if in.h264 == nil {
		return in.writer.WriteRTP(&p)
	}
	out, _ := in.h264.push(&p)
	for i := range out {
		if err := in.writer.WriteRTP(&out[i]); err != nil {
			return err
		}
	}
	return nil
}

// writeRTCP handles an RTCP compound packet from the source: its sender
// reports give the stream's readers their clock mapping.
func (in *trackInput) writeRTCP(b []byte) error {
	pkts, err := rtcp.Unmarshal(b)
	if err != nil {
		return nil
	}
	in.mu.Lock()
	w := in.writer
	in.mu.Unlock()
	if w == nil {
		return nil
	}
	for _, p := range pkts {
		if sr, ok := p.(*rtcp.SenderReport); ok {
			if err := w.WriteSenderReport(sr); errors.Is(err, media.ErrReplaced) {
				return err
			}
		}
	}
	return nil
}

// sourceSSRC returns the SSRC the source sends with (0 before a packet).
func (in *trackInput) sourceSSRC() uint32 { return in.ssrc.Load() }

// chooseInputs picks the tracks to publish: the first supported video and
// the first supported audio among those given.
func chooseInputs(ins []*trackInput) []*trackInput {
	var out []*trackInput
	var video, audio bool
	for _, in := range ins {
		if in == nil || in.desc.Unsupported != "" {
			continue
		}
		switch {
		case in.desc.Kind == media.KindVideo && !video:
			video = true
		case in.desc.Kind == media.KindAudio && !audio:
			audio = true
		default:
			continue
		}
		out = append(out, in)
	}
	return out
}
