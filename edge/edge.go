package edge

import (
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
}

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

	mu      sync.Mutex
	viewers map[string]*viewer
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
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "whep", "edge", cfg.ID),
		se:      cfg.RTC.SettingEngine(),
		viewers: map[string]*viewer{},
	}
	m, err := newMetrics(cfg.Metrics, s)
	if err != nil {
		return nil, err
	}
	s.metrics = m
	return s, nil
}

// Handler serves the /whep/ prefix.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

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

const (
	endpointMethods = "POST, OPTIONS"
	resourceMethods = "DELETE, OPTIONS"
)

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	rtc.SetCORS(w.Header())
	rest, ok := strings.CutPrefix(r.URL.Path, "/whep/")
	if !ok {
		rest = strings.TrimPrefix(r.URL.Path, "/") // mounted with StripPrefix
	}
	parts := strings.Split(rest, "/")
	switch {
	case len(parts) == 1 && parts[0] != "":
		s.serveEndpoint(w, r, parts[0])
	case len(parts) == 2 && parts[0] != "" && parts[1] != "":
		s.serveResource(w, r, parts[0], parts[1])
	default:
		problem.Write(w, http.StatusNotFound, "use /whep/{stream}")
	}
}

func (s *Server) serveEndpoint(w http.ResponseWriter, r *http.Request, stream string) {
	switch r.Method {
	case http.MethodOptions:
		rtc.WritePreflight(w, endpointMethods)
		return
	case http.MethodPost:
	default:
		rtc.WriteMethodNotAllowed(w, endpointMethods)
		return
	}
	if !media.ValidStreamName(stream) {
		s.reject(w, "bad_stream", http.StatusBadRequest, media.StreamNameRule)
		return
	}
	offerSDP, ok := rtc.ReadSDP(w, r)
	if !ok {
		s.metrics.rejections.WithLabelValues("bad_request").Inc()
		return
	}
	st, ok := s.cfg.Registry.Lookup(stream)
	if !ok || !st.Live() {
		s.metrics.rejections.WithLabelValues("offline").Inc()
		problem.WriteRetry(w, http.StatusConflict, RetryAfterOffline, fmt.Sprintf("stream %q is not on air", stream))
		return
	}
	offer, err := rtc.ParseOffer(offerSDP)
	if err != nil {
		s.reject(w, "bad_offer", http.StatusBadRequest, err.Error())
		return
	}
	plans, err := planViewer(offer, st.Tracks())
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
	v, answer, status, err := s.newViewer(r.Context(), st, offerSDP, plans, r.RemoteAddr)
	if err != nil {
		s.reject(w, "bad_offer", status, err.Error())
		return
	}
	h := w.Header()
	h.Set("Content-Type", rtc.ContentTypeSDP)
	h.Set("Location", rtc.ResourceURL(s.cfg.PublicURL, "/whep/"+stream+"/"+v.id))
	h.Set("ETag", v.etag)
	h.Set("Cache-Control", "no-store")
	for _, l := range rtc.LinkHeaders(s.cfg.RTC.ICEServers()) {
		h.Add("Link", l)
	}
	w.WriteHeader(http.StatusCreated)
	_, _ = w.Write([]byte(answer))
}

func (s *Server) serveResource(w http.ResponseWriter, r *http.Request, stream, id string) {
	switch r.Method {
	case http.MethodOptions:
		rtc.WritePreflight(w, resourceMethods)
	case http.MethodDelete:
		s.mu.Lock()
		v := s.viewers[id]
		s.mu.Unlock()
		if v == nil || v.stream != stream {
			problem.Write(w, http.StatusNotFound, "no such WHEP session")
			return
		}
		v.close("deleted by client")
		w.WriteHeader(http.StatusOK)
	default:
		// No trickle ICE or ICE restart (PATCH): answers carry every
		// candidate, and a viewer whose network changes plays again.
		rtc.WriteMethodNotAllowed(w, resourceMethods)
	}
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
	for _, t := range v.tracks {
		s.retiredPackets += t.packets.Load()
		s.retiredBytes += t.octets.Load()
	}
	s.metrics.viewers.Set(float64(len(s.viewers)))
}

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
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backchannel_whep_rejections_total", Help: "WHEP play requests refused, by reason."}, []string{"reason"}),
	}
	packets := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "backchannel_whep_packets_sent_total", Help: "RTP packets forwarded to viewers (retransmissions excluded)."},
		func() float64 { p, _ := s.sent(); return float64(p) })
	bytes := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "backchannel_whep_bytes_sent_total", Help: "RTP payload bytes forwarded to viewers (retransmissions excluded)."},
		func() float64 { _, b := s.sent(); return float64(b) })
	for _, c := range []prometheus.Collector{m.viewers, m.nacks, m.keyframes, m.rejections, packets, bytes} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("edge: registering metrics: %w", err)
		}
	}
	return m, nil
}
