package ingest

import (
	"crypto/subtle"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/backchannel/backchannel/internal/keys"
	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/problem"
	"github.com/backchannel/backchannel/internal/rtc"
)

// KeyChecker authorizes publishing: it reports whether key may publish to
// stream.
type KeyChecker interface {
	CheckPublishKey(stream, key string) bool
}

// KeyIdentifier is a KeyChecker that also names the key that matched, so
// that the sessions published with a key can be ended when it is revoked
// (see EndRevoked). internal/keys implements it.
type KeyIdentifier interface {
	IdentifyPublishKey(stream, key string) (id string, ok bool)
}

// IdentifyKey checks key with k and names it: through KeyIdentifier when k
// implements it, else with an empty id.
func IdentifyKey(k KeyChecker, stream, key string) (id string, ok bool) {
	if ki, isID := k.(KeyIdentifier); isID {
		return ki.IdentifyPublishKey(stream, key)
	}
	return "", k.CheckPublishKey(stream, key)
}

// MasterKey is a development key accepted for every stream. The empty key
// accepts nothing.
type MasterKey string

// CheckPublishKey compares in constant time.
func (k MasterKey) CheckPublishKey(_, key string) bool {
	return k != "" && subtle.ConstantTimeCompare([]byte(k), []byte(key)) == 1
}

// MasterKeyID names the master key in PublisherInfo.KeyID.
const MasterKeyID = keys.MasterID

// IdentifyDigest checks RTSP Digest credentials against the master key,
// under any user name: match is given MD5(username:realm:key).
func (k MasterKey) IdentifyDigest(_, username string, match func(ha1 string) bool) (string, bool) {
	if k != "" && match(keys.DigestHA1(username, string(k))) {
		return MasterKeyID, true
	}
	return "", false
}

// IdentifyPublishKey names the master key MasterKeyID.
func (k MasterKey) IdentifyPublishKey(stream, key string) (string, bool) {
	if k.CheckPublishKey(stream, key) {
		return MasterKeyID, true
	}
	return "", false
}

// EndRevoked ends the live publications of the given stream that were
// authorized with key id, whatever their protocol (WHIP, RTSP), and
// returns how many it ended. Wire it to the key store's revocations.
func EndRevoked(reg *media.Registry, stream, id string) int {
	if id == "" {
		return 0
	}
	return reg.EndPublishers(func(s string, who media.PublisherInfo) bool {
		return s == stream && who.KeyID == id
	})
}

// Config configures a WHIP server.
type Config struct {
	Node      string
	Registry  *media.Registry
	RTC       *rtc.Transport
	Keys      KeyChecker
	PublicURL string // base of Location URLs; empty: relative paths
	Logger    *slog.Logger
	Metrics   prometheus.Registerer // nil: a private registry
}

// SetupTimeout is how long a WHIP session may take from its answer to a
// working connection before it is dropped.
const SetupTimeout = 30 * time.Second

// Server is a WHIP endpoint: POST /whip/{stream} publishes, DELETE on the
// returned session URL ends the session.
type Server struct {
	cfg     Config
	log     *slog.Logger
	se      webrtc.SettingEngine
	metrics *metrics

	mu       sync.Mutex
	sessions map[string]*session
	closed   bool
}

// New builds a WHIP server on the shared transport and registry.
func New(cfg Config) (*Server, error) {
	switch {
	case cfg.Registry == nil:
		return nil, errors.New("ingest: Config.Registry is required")
	case cfg.RTC == nil:
		return nil, errors.New("ingest: Config.RTC is required")
	case cfg.Keys == nil:
		return nil, errors.New("ingest: Config.Keys is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = prometheus.NewRegistry()
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, err
	}
	return &Server{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "whip", "node", cfg.Node),
		se:       cfg.RTC.SettingEngine(),
		metrics:  m,
		sessions: map[string]*session{},
	}, nil
}

// Handler serves the /whip/ prefix.
func (s *Server) Handler() http.Handler {
	return rtc.SessionRoutes{Prefix: "/whip/", Kind: "WHIP", Create: s.publish, End: s.endSession, Reject: s.reject}
}

// Sessions is the number of WHIP sessions (connecting or publishing).
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// Close ends every session and waits for their goroutines. Later
// publishes get 503.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	all := make([]*session, 0, len(s.sessions))
	for _, ss := range s.sessions {
		all = append(all, ss)
	}
	s.mu.Unlock()
	// close waits for each session's goroutines, including sessions some
	// other goroutine is already closing.
	for _, ss := range all {
		ss.close("server closing")
	}
	return nil
}

// publish answers a POST /whip/{stream}.
func (s *Server) publish(w http.ResponseWriter, r *http.Request, stream string) {
	key, hasBearer := bearer(r)
	keyID, keyOK := "", false
	if hasBearer {
		keyID, keyOK = IdentifyKey(s.cfg.Keys, stream, key)
	}
	if !keyOK {
		w.Header().Set("WWW-Authenticate", `Bearer realm="whip"`)
		detail := "missing Authorization: Bearer <stream key>"
		if hasBearer {
			detail = "this key may not publish to " + stream
		}
		s.reject(w, "auth", http.StatusUnauthorized, detail)
		return
	}
	offerSDP, ok := rtc.ReadSDP(w, r)
	if !ok {
		s.metrics.rejections.WithLabelValues("bad_request").Inc()
		return
	}
	offer, err := rtc.ParseOffer(offerSDP)
	if err != nil {
		s.reject(w, "bad_offer", http.StatusBadRequest, err.Error())
		return
	}
	plan, err := planPublish(offer)
	if err != nil {
		s.reject(w, "bad_offer", http.StatusBadRequest, err.Error())
		return
	}

	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		problem.WriteRetry(w, http.StatusServiceUnavailable, 5*time.Second, "ingest is shutting down")
		return
	}

	ss, answer, status, err := s.newSession(r.Context(), stream, r.RemoteAddr, key, keyID, offerSDP, plan)
	if err != nil {
		s.reject(w, "bad_offer", status, err.Error())
		return
	}
	rtc.WriteCreated(w, rtc.ResourceURL(s.cfg.PublicURL, "/whip/"+stream+"/"+ss.id), ss.etag, s.cfg.RTC.ICEServers(), answer)
}

// endSession answers a DELETE on a publisher's session URL.
func (s *Server) endSession(stream, id string) bool {
	s.mu.Lock()
	ss := s.sessions[id]
	s.mu.Unlock()
	if ss == nil || ss.stream != stream {
		return false
	}
	ss.close("deleted by client")
	return true
}

func (s *Server) reject(w http.ResponseWriter, reason string, status int, detail string) {
	s.metrics.rejections.WithLabelValues(reason).Inc()
	problem.Write(w, status, detail)
}

func bearer(r *http.Request) (string, bool) {
	v := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(v, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// newAPI builds a pion API that negotiates exactly the chosen codecs with
// the publisher's payload types, with pion's default interceptors (NACK
// generator, receiver reports, TWCC feedback).
func (s *Server) newAPI(plan publishPlan) (*webrtc.API, error) {
	me := &webrtc.MediaEngine{}
	if plan.video != nil {
		if err := me.RegisterCodec(codecParameters(*plan.video, webrtc.RTPCodecTypeVideo), webrtc.RTPCodecTypeVideo); err != nil {
			return nil, err
		}
	}
	if plan.audio != nil {
		if err := me.RegisterCodec(codecParameters(*plan.audio, webrtc.RTPCodecTypeAudio), webrtc.RTPCodecTypeAudio); err != nil {
			return nil, err
		}
	}
	ir := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(me, ir); err != nil {
		return nil, err
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(s.se)), nil
}

func (s *Server) addSession(ss *session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.sessions[ss.id] = ss
	s.metrics.sessions.Set(float64(len(s.sessions)))
	return true
}

func (s *Server) removeSession(ss *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sessions[ss.id] == ss {
		delete(s.sessions, ss.id)
	}
	s.metrics.sessions.Set(float64(len(s.sessions)))
}
