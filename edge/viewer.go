package edge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/pion/webrtc/v4"

	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/rtc"
)

// viewer is one WHEP session: a peer connection sending the stream's tracks,
// each through its own viewerTrack attached to the stream track as a sink.
type viewer struct {
	srv    *Server
	id     string
	etag   string
	stream string
	relay  string // the pulling edge's node id, for a relay session
	pc     *webrtc.PeerConnection
	keys   *dtlsKeys
	direct atomic.Bool // some track is on the direct path
	tracks []*viewerTrack
	log    *slog.Logger

	closeOnce sync.Once
	wg        sync.WaitGroup // RTCP readers

	mu       sync.Mutex
	closed   bool
	attached bool
	removes  []func()
	setup    *time.Timer
}

func (s *Server) newViewer(ctx context.Context, st *media.Stream, offer string, plans []viewerPlan, remote, relay string) (*viewer, string, int, error) {
	// One media engine per viewer: it holds exactly the payload types this
	// viewer offered for the stream's codecs, so the answer has nothing
	// else. No interceptors: NACKs, sender reports and keyframe requests
	// are handled here against the shared stream state.
	me := &webrtc.MediaEngine{}
	for _, p := range plans {
		typ := webrtc.RTPCodecTypeVideo
		if p.track.Kind() == media.KindAudio {
			typ = webrtc.RTPCodecTypeAudio
		}
		params := webrtc.RTPCodecParameters{
			RTPCodecCapability: webrtc.RTPCodecCapability{
				MimeType:     p.codec.MimeType,
				ClockRate:    p.codec.ClockRate,
				Channels:     p.codec.Channels,
				SDPFmtpLine:  p.codec.Fmtp,
				RTCPFeedback: viewerFeedback(p.track.Kind()),
			},
			PayloadType: webrtc.PayloadType(p.codec.PayloadType),
		}
		if err := me.RegisterCodec(params, typ); err != nil {
			return nil, "", http.StatusBadRequest, fmt.Errorf("cannot negotiate %s: %w", p.codec.MimeType, err)
		}
	}
	keys, se := &dtlsKeys{}, s.se
	if !s.cfg.PionSRTP {
		se = keys.settings(se)
	}
	api := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(&interceptor.Registry{}),
		webrtc.WithSettingEngine(se))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, "", http.StatusInternalServerError, err
	}
	v := &viewer{
		srv:    s,
		id:     rtc.NewToken(),
		etag:   `"` + rtc.NewToken() + `"`,
		stream: st.Name(),
		relay:  relay,
		pc:     pc,
		keys:   keys,
	}
	v.log = s.log.With("stream", v.stream, "viewer", v.id[:8], "remote", remote)
	if relay != "" {
		v.log = v.log.With("relay_for", relay)
	}
	pc.OnConnectionStateChange(v.onState)
	pc.SCTP().Transport().ICETransport().OnSelectedCandidatePairChange(func(*webrtc.ICECandidatePair) { v.route() })

	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		_ = pc.Close()
		return nil, "", http.StatusBadRequest, fmt.Errorf("offer rejected: %w", err)
	}
	for _, p := range plans {
		vt := newViewerTrack(v, p)
		vt.conn = s.cfg.RTC.UDPConn()
		sender, err := pc.AddTrack(vt)
		if err != nil {
			_ = pc.Close()
			return nil, "", http.StatusBadRequest, fmt.Errorf("offer cannot carry the %s track: %w", p.track.Kind(), err)
		}
		v.tracks = append(v.tracks, vt)
		v.wg.Add(1)
		go func() {
			defer v.wg.Done()
			vt.readRTCP(sender)
		}()
	}
	answer, err := rtc.Answer(ctx, pc)
	if err != nil {
		_ = pc.Close()
		v.wg.Wait()
		return nil, "", http.StatusInternalServerError, fmt.Errorf("creating the answer: %w", err)
	}
	if !s.addViewer(v) {
		_ = pc.Close()
		v.wg.Wait()
		return nil, "", http.StatusServiceUnavailable, errors.New("edge is shutting down")
	}
	v.mu.Lock()
	v.setup = time.AfterFunc(SetupTimeout, func() { v.close("connection not established in time") })
	v.mu.Unlock()
	v.log.Info("WHEP viewer created", "tracks", len(v.tracks))
	return v, answer, http.StatusCreated, nil
}

// route sends the viewer's media straight to its address on the ICE UDP
// socket once the connection is up over UDP (see srtp.go), and follows the
// selected candidate pair when it changes. Over ICE-TCP, or if the keys
// cannot be had, packets go through pion's SRTP session instead.
func (v *viewer) route() {
	if v.srv.cfg.PionSRTP {
		return
	}
	pair, err := v.pc.SCTP().Transport().ICETransport().GetSelectedCandidatePair()
	if err != nil || pair == nil || pair.Local.Protocol != webrtc.ICEProtocolUDP {
		return
	}
	ip := net.ParseIP(pair.Remote.Address)
	if ip == nil {
		return
	}
	addr := &net.UDPAddr{IP: ip, Port: int(pair.Remote.Port)}
	for _, vt := range v.tracks {
		if d := vt.direct.Load(); d != nil {
			vt.direct.Store(&directPath{ctx: d.ctx, addr: addr})
			continue
		}
		ctx, err := v.keys.srtpContext()
		if err != nil {
			v.log.Debug("sending through pion's SRTP session", "err", err)
			return
		}
		vt.direct.Store(&directPath{ctx: ctx, addr: addr})
	}
	if v.direct.CompareAndSwap(false, true) {
		v.srv.metrics.direct.Inc()
	}
}

func (v *viewer) onState(state webrtc.PeerConnectionState) {
	switch state {
	case webrtc.PeerConnectionStateConnected:
		v.attach()
	case webrtc.PeerConnectionStateFailed:
		v.close("connection failed")
	case webrtc.PeerConnectionStateClosed:
		v.close("connection closed")
	}
}

// attach starts the flow once the connection is up, so the keyframe we ask
// for arrives when the viewer can receive it.
func (v *viewer) attach() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed || v.attached {
		return
	}
	v.attached = true
	if v.setup != nil {
		v.setup.Stop()
	}
	v.route()
	fastStart := false
	for _, vt := range v.tracks {
		vt.batch = v.srv.batches.acquire(vt.track)
	}
	for _, vt := range v.tracks {
		// Video starts from the last keyframe the stream sent, replayed
		// from its GOP cache, when there is one: no waiting for a
		// publisher that may send keyframes only every few seconds and
		// ignore requests for one.
		remove, catchingUp, err := vt.track.AddSinkFromKeyframe(vt)
		if err != nil {
			go v.close("stream ended")
			return
		}
		v.removes = append(v.removes, remove)
		if catchingUp {
			fastStart = true
			v.srv.metrics.fastStarts.Inc()
		} else if vt.track.Kind() == media.KindVideo && vt.track.RequestKeyframe() {
			v.srv.metrics.keyframes.Inc()
		}
	}
	v.log.Info("WHEP viewer playing", "from_gop_cache", fastStart)
}

func (v *viewer) close(reason string) {
	v.closeOnce.Do(func() {
		v.mu.Lock()
		v.closed = true
		removes := v.removes
		v.removes = nil
		if v.setup != nil {
			v.setup.Stop()
		}
		v.mu.Unlock()
		// Stop the fan-out into this viewer before tearing its transport down.
		for _, remove := range removes {
			remove()
		}
		for _, vt := range v.tracks {
			vt.stopResend()
			vt.releaseBatch()
		}
		_ = v.pc.Close()
		v.wg.Wait()
		v.srv.removeViewer(v)
		v.log.Info("WHEP viewer ended", "reason", reason)
	})
}

// binding is what pion tells a track when the sender starts: the viewer's
// SSRC and payload type, and where to write.
type binding struct {
	ssrc uint32
	pt   uint8
	w    webrtc.TrackLocalWriter
}

// viewerTrack is one viewer's copy of a stream track: a pion TrackLocal
// (so pion negotiates and binds it) and a media.Sink (so the stream feeds
// it). Packets pass through untouched except for SSRC and payload type.
type viewerTrack struct {
	v     *viewer
	track *media.Track
	plan  viewerPlan
	kind  webrtc.RTPCodecType
	bound atomic.Pointer[binding]

	// Used only by the stream's writer goroutine (calls are serialized).
	hdr     rtp.Header
	started bool
	// Used only by this viewer's RTCP goroutine.
	rtxHdr rtp.Header

	// The timestamps this viewer got for replayed frames (its catch-up
	// from the GOP cache), so retransmissions of those packets carry
	// them too.
	catchUpMu  sync.Mutex
	catchUp    []frameStamp
	catchUpEnd uint16 // first live sequence number, once known
	caughtUp   bool

	// The direct path: an SRTP context of this track's own and the
	// viewer's address; nil while packets go through pion. Live packets
	// join the stream track's batch; catch-up packets and retransmissions
	// (other goroutines) are written at once.
	direct   atomic.Pointer[directPath]
	batch    *sendBatch
	released bool
	conn     *net.UDPConn
	encMu    sync.Mutex // the context is shared by the fan-out, the catch-up and retransmissions
	oneBuf   []byte
	encHdr   rtp.Header

	// firstSeq is the first outgoing sequence number this viewer got, with
	// bit 16 set once known; NACKs for earlier packets are not answered.
	firstSeq    atomic.Uint32
	resendFirst atomic.Pointer[time.Timer] // firstPacketResend
	packets     atomic.Uint64
	octets      atomic.Uint64
}

func newViewerTrack(v *viewer, p viewerPlan) *viewerTrack {
	kind := webrtc.RTPCodecTypeVideo
	if p.track.Kind() == media.KindAudio {
		kind = webrtc.RTPCodecTypeAudio
	}
	return &viewerTrack{v: v, track: p.track, plan: p, kind: kind}
}

// ID, RID, StreamID and Kind identify the track to pion.
func (t *viewerTrack) ID() string                { return string(t.track.Kind()) }
func (t *viewerTrack) RID() string               { return "" }
func (t *viewerTrack) StreamID() string          { return t.v.stream }
func (t *viewerTrack) Kind() webrtc.RTPCodecType { return t.kind }

// Bind picks the negotiated payload type for the stream codec.
func (t *viewerTrack) Bind(ctx webrtc.TrackLocalContext) (webrtc.RTPCodecParameters, error) {
	for _, c := range ctx.CodecParameters() {
		if strings.EqualFold(c.MimeType, t.plan.codec.MimeType) {
			t.bound.Store(&binding{ssrc: uint32(ctx.SSRC()), pt: uint8(c.PayloadType), w: ctx.WriteStream()})
			return c, nil
		}
	}
	return webrtc.RTPCodecParameters{}, webrtc.ErrUnsupportedCodec
}

// Unbind stops writes.
func (t *viewerTrack) Unbind(webrtc.TrackLocalContext) error {
	t.bound.Store(nil)
	return nil
}

// WriteRTP forwards one stream packet. Video starts at a keyframe so the
// viewer's decoder never sees a delta it cannot use.
func (t *viewerTrack) WriteRTP(p *media.Packet) {
	b := t.bound.Load()
	if b == nil {
		return
	}
	if !t.started {
		if t.kind == webrtc.RTPCodecTypeVideo && !p.Keyframe {
			return
		}
		t.started = true
		t.firstSeq.Store(uint32(p.Header.SequenceNumber) | 1<<16)
		if t.kind == webrtc.RTPCodecTypeVideo {
			first := media.Packet{Header: p.Header, Payload: bytes.Clone(p.Payload)}
			t.resendFirst.Store(time.AfterFunc(firstPacketResend, func() { t.resend(&first) }))
		}
	}
	if p.CatchUp {
		t.noteCatchUp(p.Header.SequenceNumber, p.Header.Timestamp)
	} else if !t.caughtUp {
		t.catchUpMu.Lock()
		t.catchUpEnd, t.caughtUp = p.Header.SequenceNumber, true
		t.catchUpMu.Unlock()
	}
	t.hdr = p.Header
	t.hdr.SSRC, t.hdr.PayloadType = b.ssrc, b.pt
	var err error
	switch d := t.direct.Load(); {
	case d != nil && !p.CatchUp:
		err = t.queue(d, &t.hdr, p.Payload)
	case d != nil:
		err = t.writeNow(d, &t.hdr, p.Payload)
	default:
		_, err = b.w.WriteRTP(&t.hdr, p.Payload)
	}
	if err == nil {
		t.packets.Add(1)
		t.octets.Add(uint64(len(p.Payload)))
	}
}

// directPath is where a viewer track's SRTP goes.
type directPath struct {
	ctx  *srtp.Context
	addr *net.UDPAddr
}

// queue encrypts a packet into the stream track's batch, sent by Flush.
func (t *viewerTrack) queue(d *directPath, h *rtp.Header, payload []byte) error {
	buf := t.batch.slot()
	ct, err := t.encrypt(d, buf, h, payload)
	if err != nil {
		return err
	}
	t.batch.add(ct, d.addr)
	return nil
}

// writeNow encrypts a packet and writes it at once.
func (t *viewerTrack) writeNow(d *directPath, h *rtp.Header, payload []byte) error {
	t.encMu.Lock()
	defer t.encMu.Unlock()
	if t.oneBuf == nil {
		t.oneBuf = make([]byte, 0, maxDatagram)
	}
	ct, err := t.encryptLocked(d, t.oneBuf[:0], h, payload)
	if err != nil {
		return err
	}
	_, err = t.conn.WriteToUDP(ct, d.addr)
	return err
}

func (t *viewerTrack) encrypt(d *directPath, buf []byte, h *rtp.Header, payload []byte) ([]byte, error) {
	t.encMu.Lock()
	defer t.encMu.Unlock()
	return t.encryptLocked(d, buf, h, payload)
}

// encryptLocked marshals the packet into buf and encrypts it in place.
// Padding (publishers' bandwidth probes are padding-only packets) is
// written back as the header describes it, as pion's writer does: the
// stream model keeps its size in the header, not in the payload.
func (t *viewerTrack) encryptLocked(d *directPath, buf []byte, h *rtp.Header, payload []byte) ([]byte, error) {
	pad := 0
	if h.Padding {
		pad = int(h.PaddingSize)
		if pad == 0 {
			hc := *h
			hc.Padding = false
			h = &hc
		}
	}
	hl := h.MarshalSize()
	size := hl + len(payload) + pad
	if size+srtpOverhead > cap(buf) {
		return nil, errTooLarge
	}
	plain := buf[:size]
	if _, err := h.MarshalTo(plain); err != nil {
		return nil, err
	}
	copy(plain[hl:], payload)
	if pad > 0 {
		clear(plain[hl+len(payload) : size-1])
		plain[size-1] = byte(pad)
	}
	return d.ctx.EncryptRTP(plain[:0], plain, &t.encHdr)
}

// srtpOverhead is the most SRTP adds to a packet (an HMAC-SHA1-80 or
// GCM tag).
const srtpOverhead = 16

var errTooLarge = errors.New("edge: RTP packet too large for the direct path")

// Flush sends the stream track's batch: the packet just fanned out, to
// every viewer of the track at once (the first viewer's Flush sends, the
// others find the batch empty).
func (t *viewerTrack) Flush() {
	if t.batch != nil {
		t.batch.flush()
	}
}

func (t *viewerTrack) releaseBatch() {
	if t.batch != nil && !t.released {
		t.released = true
		t.v.srv.batches.release(t.track)
	}
}

// WriteSenderReport rewrites the publisher's report for this viewer: its
// SSRC, the munged RTP time and what this viewer was actually sent.
func (t *viewerTrack) WriteSenderReport(sr media.SenderReport) {
	b := t.bound.Load()
	if b == nil || !t.started {
		return
	}
	_ = t.v.pc.WriteRTCP([]rtcp.Packet{&rtcp.SenderReport{
		SSRC:        b.ssrc,
		NTPTime:     sr.NTPTime,
		RTPTime:     sr.RTPTime,
		PacketCount: uint32(t.packets.Load()),
		OctetCount:  uint32(t.octets.Load()),
	}})
}

// Detached: the stream ended or changed codec; the viewer must reconnect.
func (t *viewerTrack) Detached(reason error) {
	go t.v.close(reason.Error())
}

// readRTCP handles the viewer's feedback for this track: NACKs from the
// shared ring, PLI/FIR as upstream keyframe requests.
func (t *viewerTrack) readRTCP(sender *webrtc.RTPSender) {
	for {
		pkts, _, err := sender.ReadRTCP()
		if err != nil {
			return
		}
		for _, p := range pkts {
			switch p := p.(type) {
			case *rtcp.TransportLayerNack:
				t.answerNack(p)
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				if t.track.RequestKeyframe() {
					t.v.srv.metrics.keyframes.Inc()
				}
			}
		}
	}
}

// frameStamp is the timestamp a viewer got for a replayed frame, from its
// first packet on.
type frameStamp struct {
	seq uint16
	ts  uint32
}

func (t *viewerTrack) noteCatchUp(seq uint16, ts uint32) {
	t.catchUpMu.Lock()
	defer t.catchUpMu.Unlock()
	if n := len(t.catchUp); n == 0 || t.catchUp[n-1].ts != ts {
		t.catchUp = append(t.catchUp, frameStamp{seq: seq, ts: ts})
	}
}

// replayedTimestamp returns the timestamp this viewer got for packet seq
// if it was replayed to it from the GOP cache.
func (t *viewerTrack) replayedTimestamp(seq, firstSeq uint16) (uint32, bool) {
	t.catchUpMu.Lock()
	defer t.catchUpMu.Unlock()
	if len(t.catchUp) == 0 || (t.caughtUp && seq-firstSeq >= t.catchUpEnd-firstSeq) {
		return 0, false
	}
	d := seq - firstSeq
	i := sort.Search(len(t.catchUp), func(i int) bool { return t.catchUp[i].seq-firstSeq > d }) - 1
	if i < 0 {
		return 0, false
	}
	return t.catchUp[i].ts, true
}

func (t *viewerTrack) answerNack(n *rtcp.TransportLayerNack) {
	b := t.bound.Load()
	if b == nil || n.MediaSSRC != b.ssrc {
		return
	}
	first := t.firstSeq.Load()
	if first&(1<<16) == 0 {
		return
	}
	firstSeq := uint16(first)
	for _, pair := range n.Nacks {
		pair.Range(func(seq uint16) bool {
			if int16(seq-firstSeq) >= 0 && t.retransmit(b, &t.rtxHdr, seq, firstSeq) {
				t.v.srv.metrics.nacks.Inc()
			}
			return true
		})
	}
}

// retransmit sends packet seq again, if the track still holds it; hdr is
// the caller's scratch header.
func (t *viewerTrack) retransmit(b *binding, hdr *rtp.Header, seq, firstSeq uint16) bool {
	return t.track.Retransmit(seq, func(p *media.Packet) {
		*hdr = p.Header
		hdr.SSRC, hdr.PayloadType = b.ssrc, b.pt
		if ts, ok := t.replayedTimestamp(seq, firstSeq); ok {
			hdr.Timestamp = ts
		}
		t.writeAgain(b, hdr, p.Payload)
	})
}

// writeAgain writes a packet the viewer was sent before, outside the
// fan-out's batch.
func (t *viewerTrack) writeAgain(b *binding, hdr *rtp.Header, payload []byte) {
	if d := t.direct.Load(); d != nil {
		_ = t.writeNow(d, hdr, payload)
		return
	}
	_, _ = b.w.WriteRTP(hdr, payload)
}

// firstPacketResend is when a viewer's first video packet (the start of
// its first keyframe, often the parameter sets) goes out a second time. A
// receiver cannot ask for a packet it never knew existed (a NACK needs a
// gap before it), and without that packet the whole first GOP is
// undecodable: behind a publisher that ignores keyframe requests the
// viewer would wait for the next natural keyframe, seconds away. A
// receiver that has the packet drops the copy (SRTP replay protection).
const firstPacketResend = 40 * time.Millisecond

// resend writes the viewer's first packet again, as it was sent (a copy:
// a replayed keyframe may be older than the retransmission ring reaches).
func (t *viewerTrack) resend(p *media.Packet) {
	b := t.bound.Load()
	if b == nil {
		return
	}
	hdr := p.Header
	hdr.SSRC, hdr.PayloadType = b.ssrc, b.pt
	t.writeAgain(b, &hdr, p.Payload)
}

// stopResend cancels a pending resend of the first packet.
func (t *viewerTrack) stopResend() {
	if tm := t.resendFirst.Load(); tm != nil {
		tm.Stop()
	}
}
