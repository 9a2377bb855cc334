package connection

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/backchannel/backchannel/groups"
	"github.com/backchannel/backchannel/internal/bus"
	"github.com/backchannel/backchannel/internal/control"
	"github.com/backchannel/backchannel/internal/identity"
	"github.com/backchannel/backchannel/internal/problem"
)

// Config configures a connection server. Zero values of the tuning fields
// take the defaults in their comments.
type Config struct {
	ID             string // connection server id; the conn attribute of its links
	Bus            bus.Bus
	Identity       *identity.Issuer
	AllowedOrigins []string // host patterns (path.Match syntax) besides the request's own host
	PublicURL      string   // base URL clients reach this server at; /connect derives ws(s)://…/ws from it
	Logger         *slog.Logger
	Metrics        prometheus.Registerer

	HelloTimeout time.Duration // first frame deadline (5 s)
	RateLimit    float64       // client frames per second per link (20)
	RateBurst    int           // token bucket size (40)
	QueueSoft    int           // queued messages past which non-critical ones are dropped (64)
	QueueHard    int           // queued messages past which the link is closed as too slow (256)
	WriteTimeout time.Duration // one frame write (10 s)
	PingInterval time.Duration // keepalive period over all links (25 s)
	FlushDelay   time.Duration // longest wait before relaying client messages upward (20 ms)
}

// Server is a connection server.
type Server struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	index   *groups.Index[*link]
	up      *upward

	ctx    context.Context // ends at Shutdown; parent of every link operation
	cancel context.CancelFunc

	mu       sync.Mutex
	conns    map[*link]struct{} // every accepted link, hello or not
	bySid    map[string]*link   // links that said hello
	stopping bool

	handlers sync.WaitGroup // link handler goroutines
	flushers sync.WaitGroup // per-link writer goroutines
	pings    sync.WaitGroup
}

// New checks cfg and returns a server. It starts no goroutine: call Run to
// consume downward bus messages, and serve Handler and ConnectHandler.
func New(cfg Config) (*Server, error) {
	if cfg.ID == "" || strings.ContainsAny(cfg.ID, " \t\n") {
		return nil, errors.New("connection: Config.ID must be a non-empty word")
	}
	if cfg.Bus == nil {
		return nil, errors.New("connection: Config.Bus is required")
	}
	if cfg.Identity == nil {
		return nil, errors.New("connection: Config.Identity is required")
	}
	if cfg.PublicURL != "" {
		u, err := url.Parse(cfg.PublicURL)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "ws" && u.Scheme != "wss") {
			return nil, fmt.Errorf("connection: PublicURL %q is not an absolute http(s) or ws(s) URL", cfg.PublicURL)
		}
	}
	for _, p := range cfg.AllowedOrigins {
		if _, err := path.Match(p, ""); err != nil {
			return nil, fmt.Errorf("connection: bad origin pattern %q: %w", p, err)
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = prometheus.NewRegistry()
	}
	setDefault(&cfg.HelloTimeout, 5*time.Second)
	setDefault(&cfg.RateLimit, 20)
	setDefault(&cfg.RateBurst, 40)
	setDefault(&cfg.QueueSoft, 64)
	setDefault(&cfg.QueueHard, 256)
	setDefault(&cfg.WriteTimeout, 10*time.Second)
	setDefault(&cfg.PingInterval, 25*time.Second)
	setDefault(&cfg.FlushDelay, 20*time.Millisecond)
	if cfg.QueueHard < cfg.QueueSoft {
		cfg.QueueHard = cfg.QueueSoft
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("connection: registering metrics: %w", err)
	}
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "connection", "conn", cfg.ID),
		metrics: m,
		index:   groups.NewIndex[*link](),
		conns:   make(map[*link]struct{}),
		bySid:   make(map[string]*link),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.up = newUpward(s)
	return s, nil
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// Links returns the number of links that said hello and are open.
func (s *Server) Links() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.bySid)
}

// GroupCount returns how many of this server's links belong to a group,
// according to its mirror of the membership.
func (s *Server) GroupCount(id string) int { return s.index.Count(id) }

// LinkGroups returns the groups a link belongs to in this server's mirror.
func (s *Server) LinkGroups(sid string) []string {
	s.mu.Lock()
	l := s.bySid[sid]
	s.mu.Unlock()
	if l == nil {
		return nil
	}
	return s.index.GroupsOf(l)
}

// Handler serves GET /ws, the control-link WebSocket endpoint.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveWS) }

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		problem.Write(w, http.StatusMethodNotAllowed, "the control link is opened with GET and a WebSocket upgrade")
		return
	}
	if !s.originAllowed(r) {
		s.metrics.rejected.WithLabelValues("origin").Inc()
		problem.Write(w, http.StatusForbidden, fmt.Sprintf("origin %q is not allowed", r.Header.Get("Origin")))
		return
	}
	s.mu.Lock()
	stopping := s.stopping
	if !stopping {
		s.handlers.Add(1)
	}
	s.mu.Unlock()
	if stopping {
		s.metrics.rejected.WithLabelValues("stopping").Inc()
		problem.WriteRetry(w, http.StatusServiceUnavailable, 2*time.Second, "server is shutting down")
		return
	}
	defer s.handlers.Done()
	ws, err := acceptCoder(w, r, control.MaxFrame)
	if err != nil {
		s.metrics.rejected.WithLabelValues("upgrade").Inc()
		return // Accept has answered the request
	}
	l := &link{srv: s, ws: ws}
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		_ = ws.Close(control.CloseGoingAway, "server shutting down")
		return
	}
	s.conns[l] = struct{}{}
	s.mu.Unlock()
	l.serve(requestFacts(r))
}

// originAllowed applies the allow-list: a browser's Origin must be the
// request's own host or match one of the patterns (by host, or by
// scheme://host when the pattern has a scheme). Requests without Origin
// are not from browsers and are allowed.
func (s *Server) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	for _, p := range s.cfg.AllowedOrigins {
		target := u.Host
		if strings.Contains(p, "://") {
			target = u.Scheme + "://" + u.Host
		}
		if ok, _ := path.Match(strings.ToLower(p), strings.ToLower(target)); ok {
			return true
		}
	}
	return false
}

func requestFacts(r *http.Request) *groups.Facts {
	f := &groups.Facts{
		IP:             r.RemoteAddr,
		UserAgent:      r.UserAgent(),
		AcceptLanguage: r.Header.Get("Accept-Language"),
		Origin:         r.Header.Get("Origin"),
		OpenedAt:       time.Now().UTC(),
	}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		f.IP = host
	}
	for name, vals := range r.Header {
		if strings.HasPrefix(name, "Sec-Ch-Ua") && len(vals) > 0 {
			if f.ClientHints == nil {
				f.ClientHints = make(map[string]string)
			}
			f.ClientHints[strings.ToLower(name)] = vals[0]
		}
	}
	return f
}

// hello registers a link that said hello, answers welcome and mirrors the
// new profile upward. It reports false if the link had to be closed.
func (s *Server) hello(l *link, h *control.Hello, facts *groups.Facts) bool {
	id, token, _, err := s.cfg.Identity.Resolve(h.Token)
	if err != nil {
		s.log.Error("issuing an identity", "err", err)
		l.fail(control.CloseInternalError, "cannot issue an identity", "internal")
		return false
	}
	sid, err := newSID()
	if err != nil {
		l.fail(control.CloseInternalError, "cannot issue a session id", "internal")
		return false
	}
	attrs := groups.Attrs{groups.AttrConn: s.cfg.ID}
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		l.fail(control.CloseGoingAway, "server shutting down", "shutdown")
		return false
	}
	l.sid, l.uid = sid, id.UID
	s.bySid[sid] = l
	s.mu.Unlock()
	s.index.Add(l, attrs)
	s.metrics.links.Inc()
	s.metrics.messagesIn.WithLabelValues(control.TypeHello).Inc()
	l.sendOne(control.Encode(control.Welcome{Sid: sid, UID: id.UID, Token: token}), true)
	s.up.add(groups.LinkOpened(s.cfg.ID, sid, id.UID, id.Streams, *facts, attrs))
	return true
}

// unregister forgets a link whose reading goroutine has ended.
func (s *Server) unregister(l *link, peerCode int) {
	s.mu.Lock()
	delete(s.conns, l)
	registered := l.sid != "" && s.bySid[l.sid] == l
	if registered {
		delete(s.bySid, l.sid)
	}
	s.mu.Unlock()

	l.mu.Lock()
	code, reason := l.code, l.reason
	serverClosed := l.closing
	l.closing = true
	l.queue = nil
	l.mu.Unlock()
	if !serverClosed {
		code, reason = peerCode, "client_closed"
		if peerCode == 0 {
			reason = "connection_lost"
		}
		s.metrics.closes.WithLabelValues(reason).Inc()
	}
	if !registered {
		return
	}
	s.index.Remove(l)
	s.metrics.links.Dec()
	s.up.add(groups.LinkClosed(s.cfg.ID, l.sid, code, reason))
}

func newSID() (string, error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// ConnectHandler serves GET /connect, the load balancer endpoint: it answers
// {"url":"ws(s)://host/ws"} naming the connection server to open the
// control link on. Today that is this server; picking the least-loaded one
// of a cluster comes later.
func (s *Server) ConnectHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			problem.Write(w, http.StatusMethodNotAllowed, "use GET")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(struct {
			URL string `json:"url"`
		}{s.wsURL(r)})
	})
}

func (s *Server) wsURL(r *http.Request) string {
	if s.cfg.PublicURL != "" {
		u, _ := url.Parse(s.cfg.PublicURL)
		switch u.Scheme {
		case "https":
			u.Scheme = "wss"
		case "http":
			u.Scheme = "ws"
		}
		u.Path = strings.TrimSuffix(u.Path, "/") + "/ws"
		u.RawQuery, u.Fragment = "", ""
		return u.String()
	}
	scheme := "ws"
	if r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https") {
		scheme = "wss"
	}
	return scheme + "://" + r.Host + "/ws"
}

// Run consumes this server's downward topic and the broadcast topic, and
// pings idle links from one shared ticker, until ctx ends or Shutdown.
func (s *Server) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()

	errc := make(chan error, 2)
	for _, topic := range []string{bus.Downward(s.cfg.ID), bus.Broadcast} {
		go func() { errc <- s.cfg.Bus.Subscribe(ctx, topic, s.cfg.ID, s.handleDown) }()
	}
	ticker := time.NewTicker(s.cfg.PingInterval)
	defer ticker.Stop()
	var err error
	running := 2
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err = <-errc:
			running--
			break loop
		case <-ticker.C:
			s.keepalive(ctx)
		}
	}
	cancel()
	for ; running > 0; running-- {
		<-errc
	}
	s.pings.Wait()
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("connection: consuming the bus: %w", err)
	}
	return nil
}

// keepalive pings every link that has been silent for a whole interval,
// a bounded number at a time.
func (s *Server) keepalive(ctx context.Context) {
	cutoff := time.Now().Add(-s.cfg.PingInterval).UnixNano()
	var idle []*link
	s.mu.Lock()
	for _, l := range s.bySid {
		if l.lastRead.Load() < cutoff {
			idle = append(idle, l)
		}
	}
	s.mu.Unlock()
	if len(idle) == 0 {
		return
	}
	s.pings.Add(1)
	go func() {
		defer s.pings.Done()
		sem := make(chan struct{}, 64)
		var wg sync.WaitGroup
		for _, l := range idle {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				wg.Wait()
				return
			}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				pctx, cancel := context.WithTimeout(ctx, s.cfg.PingInterval)
				defer cancel()
				if err := l.ws.Ping(pctx); err != nil && ctx.Err() == nil {
					l.abort(control.CloseGoingAway, "ping_timeout")
				}
			}()
		}
		wg.Wait()
	}()
}

// handleDown applies a batch of downward mirror messages. A message that
// cannot be decoded is logged and skipped: refusing the batch would only
// have it redelivered forever.
func (s *Server) handleDown(_ context.Context, batch []bus.Message) error {
	for _, bm := range batch {
		m, err := groups.DecodeMirror(bm.Data)
		if err != nil {
			s.metrics.busErrors.Inc()
			s.log.Warn("skipping a bad downward message", "id", bm.ID, "err", err)
			continue
		}
		s.applyDown(m)
	}
	return nil
}

func (s *Server) linkBySid(sid string) *link {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bySid[sid]
}

func (s *Server) applyDown(m groups.Mirror) {
	switch m.Op {
	case groups.OpSetAttrs:
		if l := s.linkBySid(m.Link); l != nil {
			// conn is this server's to set.
			delete(m.Attrs, groups.AttrConn)
			s.index.Update(l, m.Attrs)
		}
	case groups.OpDefine:
		if _, err := s.index.Define(groups.Group{ID: m.Group, Pred: m.Pred}); err != nil {
			s.log.Warn("bad group definition", "group", m.Group, "err", err)
		}
	case groups.OpUndefine:
		s.index.Undefine(m.Group)
	case groups.OpSendLink:
		if l := s.linkBySid(m.Link); l != nil && !l.sendOne(m.Payload, m.Critical) {
			l.close(control.CloseSlowConsumer, "send queue overflow", "slow_consumer")
		}
	case groups.OpSendGroup:
		var slow []*link
		msg := []byte(m.Payload)
		s.index.ForEach(m.Group, func(l *link) bool {
			if !l.enqueue(msg, m.Critical) {
				slow = append(slow, l)
			}
			return true
		})
		for _, l := range slow {
			l.close(control.CloseSlowConsumer, "send queue overflow", "slow_consumer")
		}
	case groups.OpCloseLink:
		if l := s.linkBySid(m.Link); l != nil {
			code := m.Code
			if code < 3000 || code > 4999 {
				code = control.CloseKicked
			}
			reason := m.Reason
			if len(reason) > 120 {
				reason = reason[:120]
			}
			l.close(code, reason, "kicked")
		}
	default:
		s.log.Warn("ignoring an upward message on a downward topic", "op", m.Op)
	}
}

// Shutdown closes every link with 1001 going away, waits for their
// goroutines (or ctx), relays the closes upward and stops. New links are
// refused from the start of Shutdown.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.stopping = true
	links := make([]*link, 0, len(s.conns))
	for l := range s.conns {
		links = append(links, l)
	}
	s.mu.Unlock()
	for _, l := range links {
		l.close(control.CloseGoingAway, "server shutting down", "shutdown")
	}
	done := make(chan struct{})
	go func() {
		s.handlers.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		s.mu.Lock()
		for l := range s.conns {
			_ = l.ws.CloseNow()
		}
		s.mu.Unlock()
		<-done
	}
	s.cancel() // ends Run, pending writes and pings
	s.flushers.Wait()
	s.pings.Wait()
	s.up.stop(ctx)
	return err
}
