package edge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/problem"
	"github.com/backchannel/backchannel/internal/rtc"
)

// Config configures a WHEP server.
type Config struct {
	ID        string
	Registry  *media.Registry
	RTC       *rtc.Transport
	PublicURL string // base of Location URLs; empty: relative paths
	Logger    *slog.Logger
	Metrics   prometheus.Registerer // nil: a private registry

	// Upstream, when set, brings streams this edge does not have: a POST
	// for one waits up to UpstreamWait for it to be pulled from its
	// origin before answering 409.
	Upstream     Upstream
	UpstreamWait time.Duration // default 8 s

	// MaxViewers caps WHEP sessions (0: no cap). A full edge answers a new
	// POST with 307 to the WHEP URL of a sibling that has room, when
	// Siblings names one, else 503 with Retry-After. Relays (other edges
	// pulling from this one) are not refused.
	MaxViewers int
	// Siblings returns the base URL of another edge with room for a
	// viewer of the stream, if any.
	Siblings func(stream string) (baseURL string, ok bool)

	// PionSRTP sends viewers' media through pion's SRTP session, one
	// write per packet per viewer, instead of the direct path (an SRTP
	// context per viewer track, batched sendmmsg on the ICE socket; see
	// srtp.go). For comparison and as an escape hatch.
	PionSRTP bool
}

// Upstream brings a stream the edge does not have on air: a relay from the
// stream's origin.
type Upstream interface {
	// Pull returns once the stream is live in the edge's registry, or
	// with an error (no origin has it, the pull failed, ctx ended).
	Pull(ctx context.Context, stream string) error
}

// Server-to-server WHEP: an edge pulling a stream from its origin (or a
// parent edge) marks its POST with RelayHeader (its node id). Such a
// session is offered every track the stream has, whether browsers can
// play it or not (an edge packaging HLS needs AAC and H.265 too), and the
// answer carries the stream's exact codecs in TracksHeader: JSON, a list
// of media.TrackInfo.
const (
	RelayHeader  = "Backchannel-Relay"
	TracksHeader = "Backchannel-Tracks"
)

// DefaultUpstreamWait bounds how long a POST waits for a relay to bring
// the stream.
const DefaultUpstreamWait = 8 * time.Second

// RetryAfterFull is the Retry-After of a 503 from a full edge.
const RetryAfterFull = 5 * time.Second

// RetryAfterOffline is the Retry-After of a 409 for a stream not on air.
const RetryAfterOffline = 5 * time.Second

// SetupTimeout is how long a viewer may take from its answer to a working
// connection before it is dropped.
const SetupTimeout = 30 * time.Second

// Server is a WHEP endpoint: POST /whep/{stream} plays, DELETE on the
// returned session URL stops.
type Server struct {
	cfg     Config
	log     *slog.Logger
	se      webrtc.SettingEngine
	metrics *metrics

	batches batches // per stream track, for the direct sending path

	mu      sync.Mutex
	viewers map[string]*viewer
	relays  int // of viewers, those that are other edges' relays
	closed  bool
	// Totals of viewers that left, so the sent counters never go back.
	retiredPackets, retiredBytes uint64
}

// New builds a WHEP server on the shared transport and registry.
func New(cfg Config) (*Server, error) {
	switch {
	case cfg.Registry == nil:
		return nil, errors.New("edge: Config.Registry is required")
	case cfg.RTC == nil:
		return nil, errors.New("edge: Config.RTC is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = prometheus.NewRegistry()
	}
	if cfg.UpstreamWait <= 0 {
		cfg.UpstreamWait = DefaultUpstreamWait
	}
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "whep", "edge", cfg.ID),
		se:      cfg.RTC.SettingEngine(),
		viewers: map[string]*viewer{},
		batches: batches{conn: cfg.RTC.UDPConn()},
	}
	m, err := newMetrics(cfg.Metrics, s)
	if err != nil {
		return nil, err
	}
	s.metrics = m
	return s, nil
}

// Handler serves the /whep/ prefix.
func (s *Server) Handler() http.Handler {
	return rtc.SessionRoutes{Prefix: "/whep/", Kind: "WHEP", Create: s.createViewer, End: s.endViewer, Reject: s.reject}
}

// Viewers is the number of WHEP sessions (connecting or playing).
func (s *Server) Viewers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.viewers)
}

// Close ends every viewer session.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	all := make([]*viewer, 0, len(s.viewers))
	for _, v := range s.viewers {
		all = append(all, v)
	}
	s.mu.Unlock()
	for _, v := range all {
		v.close("server closing")
	}
	return nil
}

// createViewer answers a POST /whep/{stream}.
func (s *Server) createViewer(w http.ResponseWriter, r *http.Request, stream string) {
	offerSDP, ok := rtc.ReadSDP(w, r)
	if !ok {
		s.metrics.rejections.WithLabelValues("bad_request").Inc()
		return
	}
	relay := r.Header.Get(RelayHeader)
	if relay == "" && s.full() {
		s.shed(w, stream)
		return
	}
	st, ok := s.lookup(r.Context(), stream)
	if !ok {
		s.metrics.rejections.WithLabelValues("offline").Inc()
		problem.WriteRetry(w, http.StatusConflict, RetryAfterOffline, fmt.Sprintf("stream %q is not on air", stream))
		return
	}
	offer, err := rtc.ParseOffer(offerSDP)
	if err != nil {
		s.reject(w, "bad_offer", http.StatusBadRequest, err.Error())
		return
	}
	plans, err := planViewer(offer, st.Tracks(), relay != "")
	if err != nil {
		s.reject(w, "bad_offer", http.StatusBadRequest, err.Error())
		return
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		problem.WriteRetry(w, http.StatusServiceUnavailable, 5*time.Second, "edge is shutting down")
		return
	}
	v, answer, status, err := s.newViewer(r.Context(), st, offerSDP, plans, r.RemoteAddr, relay)
	if err != nil {
		s.reject(w, "bad_offer", status, err.Error())
		return
	}
	if relay != "" {
		w.Header().Set(TracksHeader, tracksHeader(plans))
	}
	rtc.WriteCreated(w, rtc.ResourceURL(s.cfg.PublicURL, "/whep/"+stream+"/"+v.id), v.etag, s.cfg.RTC.ICEServers(), answer)
}

// endViewer answers a DELETE on a viewer's session URL.
func (s *Server) endViewer(stream, id string) bool {
	s.mu.Lock()
	v := s.viewers[id]
	s.mu.Unlock()
	if v == nil || v.stream != stream {
		return false
	}
	v.close("deleted by client")
	return true
}

// lookup finds the stream on air here, or has the upstream bring it.
func (s *Server) lookup(ctx context.Context, stream string) (*media.Stream, bool) {
	st, ok := s.cfg.Registry.Lookup(stream)
	if ok && st.Live() {
		return st, true
	}
	if s.cfg.Upstream == nil {
		return nil, false
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.UpstreamWait)
	defer cancel()
	if err := s.cfg.Upstream.Pull(ctx, stream); err != nil {
		s.log.Debug("upstream did not bring the stream", "stream", stream, "err", err)
		return nil, false
	}
	st, ok = s.cfg.Registry.Current(stream)
	return st, ok && st.Live()
}

// full reports whether the edge is at its viewer cap (relays aside).
func (s *Server) full() bool {
	if s.cfg.MaxViewers <= 0 {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.viewers)-s.relays >= s.cfg.MaxViewers
}

// shed answers a POST the edge has no room for: 307 to a sibling with
// room (the client repeats the POST there, body included), else 503.
func (s *Server) shed(w http.ResponseWriter, stream string) {
	if s.cfg.Siblings != nil {
		if base, ok := s.cfg.Siblings(stream); ok {
			s.metrics.redirects.Inc()
			w.Header().Set("Location", strings.TrimRight(base, "/")+"/whep/"+stream)
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusTemporaryRedirect)
			return
		}
	}
	s.metrics.rejections.WithLabelValues("full").Inc()
	problem.WriteRetry(w, http.StatusServiceUnavailable, RetryAfterFull, "this edge is at capacity; retry shortly")
}

func tracksHeader(plans []viewerPlan) string {
	infos := make([]media.TrackInfo, 0, len(plans))
	for _, p := range plans {
		c := p.track.Codec()
		infos = append(infos, media.TrackInfo{Kind: string(p.track.Kind()), Codec: c.MimeType, ClockRate: c.ClockRate, Channels: c.Channels, Fmtp: c.Fmtp})
	}
	b, _ := json.Marshal(infos)
	return string(b)
}

func (s *Server) reject(w http.ResponseWriter, reason string, status int, detail string) {
	s.metrics.rejections.WithLabelValues(reason).Inc()
	problem.Write(w, status, detail)
}

func (s *Server) addViewer(v *viewer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.viewers[v.id] = v
	if v.relay != "" {
		s.relays++
	}
	s.metrics.viewers.Set(float64(len(s.viewers)))
	return true
}

func (s *Server) removeViewer(v *viewer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.viewers[v.id] != v {
		return
	}
	delete(s.viewers, v.id)
	if v.relay != "" {
		s.relays--
	}
	for _, t := range v.tracks {
		s.retiredPackets += t.packets.Load()
		s.retiredBytes += t.octets.Load()
	}
	s.metrics.viewers.Set(float64(len(s.viewers)))
}

// Sent is the number of RTP packets and payload bytes sent to viewers so
// far (retransmissions excluded).
func (s *Server) Sent() (packets, bytes uint64) { return s.sent() }

// sent sums packets and payload bytes sent to viewers, past and present.
func (s *Server) sent() (packets, bytes uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	packets, bytes = s.retiredPackets, s.retiredBytes
	for _, v := range s.viewers {
		for _, t := range v.tracks {
			packets += t.packets.Load()
			bytes += t.octets.Load()
		}
	}
	return packets, bytes
}

type metrics struct {
	viewers    prometheus.Gauge
	nacks      prometheus.Counter
	keyframes  prometheus.Counter
	fastStarts prometheus.Counter
	redirects  prometheus.Counter
	direct     prometheus.Counter
	rejections *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, s *Server) (*metrics, error) {
	m := &metrics{
		viewers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "backchannel_whep_viewers", Help: "WHEP viewer sessions, connecting or playing."}),
		nacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backchannel_whep_nack_retransmissions_total", Help: "Packets retransmitted to viewers from the shared ring in answer to NACKs."}),
		keyframes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backchannel_whep_keyframe_requests_total", Help: "Keyframe requests (viewer joins, viewer PLI/FIR) sent upstream at once; requests folded by the per-track rate limit are not counted."}),
		fastStarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backchannel_whep_fast_starts_total", Help: "Viewers whose video started from the stream's GOP cache (the last keyframe) instead of waiting for the next keyframe."}),
		redirects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backchannel_whep_redirects_total", Help: "WHEP play requests sent to a sibling edge (307) because this one was full."}),
		direct: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backchannel_whep_direct_viewers_total", Help: "Viewers whose media went on the direct path (own SRTP context, batched sends on the ICE socket) rather than through pion's SRTP session."}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backchannel_whep_rejections_total", Help: "WHEP play requests refused, by reason."}, []string{"reason"}),
	}
	packets := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "backchannel_whep_packets_sent_total", Help: "RTP packets forwarded to viewers (retransmissions excluded)."},
		func() float64 { p, _ := s.sent(); return float64(p) })
	bytes := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "backchannel_whep_bytes_sent_total", Help: "RTP payload bytes forwarded to viewers (retransmissions excluded)."},
		func() float64 { _, b := s.sent(); return float64(b) })
	for _, c := range []prometheus.Collector{m.viewers, m.nacks, m.keyframes, m.fastStarts, m.redirects, m.direct, m.rejections, packets, bytes} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("edge: registering metrics: %w", err)
		}
	}
	return m, nil
}
