package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/rtc"
)

// session is one WHIP publisher: a peer connection receiving up to one
// video and one audio track, attached to the registry once connected. It
// is the stream's media.Source while it publishes.
type session struct {
	srv    *Server
	id     string
	etag   string
	stream string
	remote string
	key    string // to check again when going live: it may be revoked meanwhile
	keyID  string
	plan   publishPlan
	pc     *webrtc.PeerConnection
	log    *slog.Logger

	published chan struct{} // closed once pub is set
	done      chan struct{} // closed when the session starts closing
	closeOnce sync.Once
	wg        sync.WaitGroup // read loops

	mu     sync.Mutex
	pub    *media.Publication
	closed bool
	setup  *time.Timer

	ssrc [2]atomic.Uint32 // publisher SSRC per kind (video, audio), for PLIs
	// A keyframe request that came before the track's first packet (a
	// viewer joining right after the publisher connected) waits here.
	pendingPLI [2]atomic.Bool
}

var _ media.Source = (*session)(nil)

func (s *Server) newSession(ctx context.Context, stream, remote, key, keyID, offer string, plan publishPlan) (*session, string, int, error) {
	api, err := s.newAPI(plan)
	if err != nil {
		return nil, "", http.StatusBadRequest, fmt.Errorf("cannot negotiate the offered codecs: %w", err)
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, "", http.StatusInternalServerError, err
	}
	ss := &session{
		srv:       s,
		id:        rtc.NewToken(),
		etag:      `"` + rtc.NewToken() + `"`,
		stream:    stream,
		remote:    remote,
		key:       key,
		keyID:     keyID,
		plan:      plan,
		pc:        pc,
		published: make(chan struct{}),
		done:      make(chan struct{}),
	}
	ss.log = s.log.With("stream", stream, "session", ss.id[:8], "remote", remote)
	pc.OnConnectionStateChange(ss.onState)
	pc.OnTrack(ss.onTrack)

	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		_ = pc.Close()
		return nil, "", http.StatusBadRequest, fmt.Errorf("offer rejected: %w", err)
	}
	answer, err := rtc.Answer(ctx, pc)
	if err != nil {
		_ = pc.Close()
		return nil, "", http.StatusInternalServerError, fmt.Errorf("creating the answer: %w", err)
	}
	if !s.addSession(ss) {
		_ = pc.Close()
		return nil, "", http.StatusServiceUnavailable, errors.New("ingest is shutting down")
	}
	ss.mu.Lock()
	ss.setup = time.AfterFunc(SetupTimeout, func() { ss.close("connection not established in time") })
	ss.mu.Unlock()
	ss.log.Info("WHIP session created", "video", codecName(plan.video), "audio", codecName(plan.audio))
	return ss, answer, http.StatusCreated, nil
}

func codecName(c *rtc.OfferCodec) string {
	if c == nil {
		return ""
	}
	return c.MimeType
}

func (ss *session) onState(state webrtc.PeerConnectionState) {
	switch state {
	case webrtc.PeerConnectionStateConnected:
		ss.goLive()
	case webrtc.PeerConnectionStateFailed:
		ss.close("connection failed")
	case webrtc.PeerConnectionStateClosed:
		ss.close("connection closed")
	}
}

// goLive attaches the session to its stream, taking over a live publisher.
func (ss *session) goLive() {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.closed || ss.pub != nil {
		return
	}
	if _, ok := IdentifyKey(ss.srv.cfg.Keys, ss.stream, ss.key); !ok {
		ss.log.Info("stream key revoked before the session went live")
		go ss.close("stream key revoked")
		return
	}
	who := media.PublisherInfo{Protocol: media.ProtocolWHIP, Remote: ss.remote, KeyID: ss.keyID}
	pub, err := ss.srv.cfg.Registry.Publish(ss.stream, who, ss.plan.codecs(), ss)
	if err != nil {
		ss.log.Warn("cannot publish", "err", err)
		go ss.close("registry refused the stream")
		return
	}
	ss.pub = pub
	if ss.setup != nil {
		ss.setup.Stop()
	}
	close(ss.published)
	ss.srv.metrics.publishes.Inc()
	if pub.TookOver() {
		ss.srv.metrics.takeovers.Inc()
		ss.log.Info("stream taken over by a new publisher")
	} else {
		ss.log.Info("stream live")
	}
}

func kindOf(t webrtc.RTPCodecType) (media.Kind, int) {
	if t == webrtc.RTPCodecTypeAudio {
		return media.KindAudio, 1
	}
	return media.KindVideo, 0
}

func (ss *session) onTrack(track *webrtc.TrackRemote, recv *webrtc.RTPReceiver) {
	ss.mu.Lock()
	if ss.closed {
		ss.mu.Unlock()
		return
	}
	ss.wg.Add(2)
	ss.mu.Unlock()
	kind, idx := kindOf(track.Kind())
	ss.ssrc[idx].Store(uint32(track.SSRC()))
	if ss.pendingPLI[idx].Swap(false) {
		ss.sendPLI(uint32(track.SSRC()))
	}
	go ss.readRTP(track, kind)
	go ss.readRTCP(recv, track, kind)
}

// writer waits until the session publishes and returns its track writer.
func (ss *session) writer(kind media.Kind) *media.TrackWriter {
	select {
	case <-ss.published:
	case <-ss.done:
		return nil
	}
	w, _ := ss.pub.Track(kind)
	return w
}

func (ss *session) readRTP(track *webrtc.TrackRemote, kind media.Kind) {
	defer ss.wg.Done()
	w := ss.writer(kind)
	if w == nil {
		return
	}
	if got := track.Codec(); !w.Track().Codec().Is(got.MimeType) {
		ss.log.Warn("publisher sent an unnegotiated codec", "kind", kind, "codec", got.MimeType)
		go ss.close("unnegotiated codec")
		return
	}
	packets := ss.srv.metrics.packets.WithLabelValues(string(kind))
	bytes := ss.srv.metrics.bytes.WithLabelValues(string(kind))
	buf := make([]byte, 1500)
	var p rtp.Packet
	for {
		n, _, err := track.Read(buf)
		if err != nil {
			return
		}
		if err := p.Unmarshal(buf[:n]); err != nil {
			continue
		}
		packets.Inc()
		bytes.Add(float64(n))
		if err := w.WriteRTP(&p); errors.Is(err, media.ErrReplaced) {
			return
		}
	}
}

func (ss *session) readRTCP(recv *webrtc.RTPReceiver, track *webrtc.TrackRemote, kind media.Kind) {
	defer ss.wg.Done()
	var w *media.TrackWriter
	for {
		pkts, _, err := recv.ReadRTCP()
		if err != nil {
			return
		}
		if w == nil {
			select {
			case <-ss.published:
				w, _ = ss.pub.Track(kind)
			default:
				continue // sender reports before going live have no timeline to map to
			}
		}
		for _, p := range pkts {
			if sr, ok := p.(*rtcp.SenderReport); ok && sr.SSRC == uint32(track.SSRC()) && w != nil {
				if errors.Is(w.WriteSenderReport(sr), media.ErrReplaced) {
					return
				}
			}
		}
	}
}

// RequestKeyframe sends the publisher a PLI for its track of this kind. The
// stream's tracks already rate-limit requests.
func (ss *session) RequestKeyframe(kind media.Kind) {
	idx := 0
	if kind == media.KindAudio {
		idx = 1
	}
	ssrc := ss.ssrc[idx].Load()
	if ssrc == 0 {
		ss.pendingPLI[idx].Store(true)
		// The track may have appeared meanwhile: do not leave it pending.
		if ssrc = ss.ssrc[idx].Load(); ssrc == 0 || !ss.pendingPLI[idx].Swap(false) {
			return
		}
	}
	ss.sendPLI(ssrc)
}

func (ss *session) sendPLI(ssrc uint32) {
	if err := ss.pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: ssrc}}); err == nil {
		ss.srv.metrics.plis.Inc()
	}
}

// Close is called by the registry when a newer publisher took the stream
// over or its key was revoked; the session ends without waiting.
func (ss *session) Close() error {
	go ss.close("ended by the registry (taken over, or key revoked)")
	return nil
}

func (ss *session) close(reason string) {
	ss.closeOnce.Do(func() {
		ss.mu.Lock()
		ss.closed = true
		pub := ss.pub
		if ss.setup != nil {
			ss.setup.Stop()
		}
		ss.mu.Unlock()
		close(ss.done)
		if pub != nil {
			pub.Close() // offline now, unless a newer publisher owns the stream
		}
		_ = ss.pc.Close()
		ss.wg.Wait()
		ss.srv.removeSession(ss)
		ss.log.Info("WHIP session ended", "reason", reason)
	})
}

type metrics struct {
	sessions   prometheus.Gauge
	publishes  prometheus.Counter
	takeovers  prometheus.Counter
	rejections *prometheus.CounterVec
	packets    *prometheus.CounterVec
	bytes      *prometheus.CounterVec
	plis       prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "backchannel_whip_sessions", Help: "WHIP publisher sessions, connecting or live."}),
		publishes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backchannel_whip_publishes_total", Help: "WHIP sessions that went live."}),
		takeovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backchannel_whip_takeovers_total", Help: "WHIP sessions that replaced a live publisher."}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backchannel_whip_rejections_total", Help: "WHIP publish requests refused, by reason."}, []string{"reason"}),
		packets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backchannel_whip_packets_received_total", Help: "RTP packets received from publishers."}, []string{"kind"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backchannel_whip_bytes_received_total", Help: "RTP bytes (header and payload) received from publishers."}, []string{"kind"}),
		plis: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backchannel_whip_keyframe_requests_total", Help: "PLIs sent to publishers."}),
	}
	for _, c := range []prometheus.Collector{m.sessions, m.publishes, m.takeovers, m.rejections, m.packets, m.bytes, m.plis} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("ingest: registering metrics: %w", err)
		}
	}
	return m, nil
}
