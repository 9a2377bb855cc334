package rtsp

import (
	"net/netip"
	"sync"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"

	"github.com/backchannel/backchannel/ingest/rtsp/wire"
	"github.com/backchannel/backchannel/internal/media"
)

// readerTrack feeds one stream track to an RTSP reader: it is the track's
// media.Sink. Packets go out as the registry has them (its SSRC, sequence
// numbers and timestamps); only the payload type is the one the reader's
// SDP announced. Video starts at a decoder start point.
type readerTrack struct {
	sess    *session
	track   *media.Track
	index   int // the track's index in the SDP (trackID=index)
	pt      uint8
	tcp     bool
	channel byte // RTP channel (TCP); RTCP on the next
	udpRTP  netip.AddrPort
	udpRTCP netip.AddrPort

	mu      sync.Mutex // guards remove
	remove  func()
	waitKey bool // owned by the track's writing goroutine once started

	// Counters for sender reports; owned by the writing goroutine.
	packets, octets uint32
	scratch         []byte
}

var _ media.Sink = (*readerTrack)(nil)

func (o *readerTrack) start() error {
	o.waitKey = o.track.Kind() == media.KindVideo
	remove, err := o.track.AddSink(o)
	if err != nil {
		return err
	}
	o.mu.Lock()
	o.remove = remove
	o.mu.Unlock()
	if o.waitKey {
		o.track.RequestKeyframe()
	}
	return nil
}

func (o *readerTrack) stop() {
	o.mu.Lock()
	remove := o.remove
	o.remove = nil
	o.mu.Unlock()
	if remove != nil {
		remove()
	}
}

// WriteRTP sends one packet. It never blocks: a TCP reader whose queue is
// full loses the packet and, for video, waits for the next start point.
func (o *readerTrack) WriteRTP(p *media.Packet) {
	if len(p.Payload) == 0 {
		return // padding-only probes from WebRTC publishers
	}
	if o.waitKey {
		if !p.Keyframe {
			return
		}
		o.waitKey = false
	}
	pkt := rtp.Packet{Header: p.Header, Payload: p.Payload}
	pkt.PayloadType = o.pt
	size := pkt.MarshalSize()
	m := o.sess.srv.metrics
	if o.tcp {
		buf := getBuf()
		if cap(*buf) < wire.FrameHeaderSize+size {
			*buf = make([]byte, 0, wire.FrameHeaderSize+size)
		}
		b := wire.AppendFrameHeader(*buf, o.channel, size)
		b = b[:wire.FrameHeaderSize+size]
		if _, err := pkt.MarshalTo(b[wire.FrameHeaderSize:]); err != nil {
			putBuf(buf)
			return
		}
		*buf = b
		if !o.sess.c.enqueue(buf) {
			m.dropped.WithLabelValues("queue_full").Inc()
			if o.track.Kind() == media.KindVideo {
				o.waitKey = true
				o.track.RequestKeyframe()
			}
			return
		}
	} else {
		if cap(o.scratch) < size {
			o.scratch = make([]byte, size, 1600)
		}
		b := o.scratch[:size]
		if _, err := pkt.MarshalTo(b); err != nil {
			return
		}
		if err := o.sess.srv.udp.send(0, b, o.udpRTP); err != nil {
			return
		}
	}
	o.packets++
	o.octets += uint32(len(p.Payload))
	m.packetsOut.Inc()
	m.bytesOut.Add(float64(size))
}

// WriteSenderReport forwards the publisher's clock mapping, with this
// reader's own counts.
func (o *readerTrack) WriteSenderReport(sr media.SenderReport) {
	if o.packets == 0 {
		return
	}
	b, err := rtcp.Marshal([]rtcp.Packet{&rtcp.SenderReport{
		SSRC: o.track.SSRC(), NTPTime: sr.NTPTime, RTPTime: sr.RTPTime,
		PacketCount: o.packets, OctetCount: o.octets,
	}})
	if err != nil {
		return
	}
	if o.tcp {
		buf := getBuf()
		*buf = wire.AppendFrameHeader(*buf, o.channel+1, len(b))
		*buf = append(*buf, b...)
		o.sess.c.enqueue(buf)
		return
	}
	_ = o.sess.srv.udp.send(1, b, o.udpRTCP)
}

// Detached: the stream ended or changed codec. The reader cannot go on
// with this SDP; closing the connection tells it.
func (o *readerTrack) Detached(reason error) {
	o.sess.log.Info("RTSP reader's track detached", "reason", reason)
	o.sess.c.close()
}
