package connection

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"path"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unique"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/backchannel/backchannel/groups"
	"github.com/backchannel/backchannel/internal/bus"
	"github.com/backchannel/backchannel/internal/control"
	"github.com/backchannel/backchannel/internal/identity"
	"github.com/backchannel/backchannel/internal/problem"
	"github.com/backchannel/backchannel/internal/wsepoll"
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

	// Transport is TransportEpoll (default: internal/wsepoll, no goroutine
	// per idle link; needs a plain TCP listener) or TransportCoder
	// (coder/websocket, a goroutine per link; works behind TLS listeners).
	Transport string
	// PlainSyscalls turns off the epoll transport's io_uring batching (on
	// where the kernel allows it): one system call per socket read and
	// write, as on kernels without io_uring.
	PlainSyscalls bool

	HelloTimeout time.Duration // first frame deadline (5 s)
	MaxMessage   int           // largest client message (control.MaxFrame, 16 KiB)
	RateLimit    float64       // client frames per second per link (20)
	RateBurst    int           // token bucket size (40)
	QueueSoft    int           // queued messages past which non-critical ones are dropped (64)
	QueueHard    int           // queued messages past which the link is closed as too slow (256)
	WriteTimeout time.Duration // a link whose socket takes nothing for this long is dropped (10 s)
	PingInterval time.Duration // keepalive: ping links silent this long, drop them if no pong within as long again (25 s)
	FlushDelay   time.Duration // longest wait before relaying client messages upward (20 ms)
	// ReplyDelay is the longest an acknowledgement waits for other frames
	// to the same link, so that they share one write (DefaultReplyDelay,
	// at most MaxReplyDelay). It waits only while the server is busy: on
	// the epoll transport a poller with nothing to read for 20 ms writes
	// what waits.
	ReplyDelay  time.Duration
	HistorySize int           // group messages kept per group for resume (128)
	HistoryTTL  time.Duration // how long a group message is kept for resume (2 min)
	DrainWindow time.Duration // Shutdown spreads its links' closes over this long (5 s)
	FanoutShard int           // group sends to more links than this are written by several goroutines (2048)
}

// Config.ReplyDelay's default and upper bound.
const (
	DefaultReplyDelay = time.Second
	MaxReplyDelay     = 5 * time.Second
)

// closeServiceRestart (RFC 6455 1012) tells a client that this server is
// going away and it should reconnect, to another server, after a jittered
// delay.
const closeServiceRestart = 1012

// Server is a connection server.
type Server struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	index   *groups.Index[*link]
	up      *upward
	acks    ackWaits

	ctx    context.Context // ends at Shutdown; parent of every link operation
	cancel context.CancelFunc

	history *history
	latest  *latestFanout // latest-state group sends, off the downward handler
	// resettable: the bus can lose shared state (bus.Resetter), so links
	// keep their raw facts for re-announcing.
	resettable bool

	startOnce sync.Once
	startErr  error
	epoll     *wsepoll.Transport
	wheel     *wheel

	mu       sync.Mutex
	conns    map[*link]struct{} // every accepted link, hello or not
	bySid    map[string]*link   // links that said hello
	stopping bool
	drained  chan struct{} // closed when conns empties after Shutdown began

	handlers sync.WaitGroup // HTTP handlers inside an upgrade (and coder links)
	writers  sync.WaitGroup // coder transport's writer and ping goroutines
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
	setDefault(&cfg.Transport, TransportEpoll)
	if cfg.Transport != TransportEpoll && cfg.Transport != TransportCoder {
		return nil, fmt.Errorf("connection: unknown Transport %q", cfg.Transport)
	}
	setDefault(&cfg.HelloTimeout, 5*time.Second)
	setDefault(&cfg.MaxMessage, control.MaxFrame)
	setDefault(&cfg.HistorySize, 128)
	setDefault(&cfg.HistoryTTL, 2*time.Minute)
	setDefault(&cfg.DrainWindow, 5*time.Second)
	setDefault(&cfg.FanoutShard, 2048)
	setDefault(&cfg.RateLimit, 20)
	setDefault(&cfg.RateBurst, 40)
	setDefault(&cfg.QueueSoft, 64)
	setDefault(&cfg.QueueHard, 256)
	setDefault(&cfg.WriteTimeout, 10*time.Second)
	setDefault(&cfg.PingInterval, 25*time.Second)
	setDefault(&cfg.FlushDelay, 20*time.Millisecond)
	setDefault(&cfg.ReplyDelay, DefaultReplyDelay)
	if cfg.ReplyDelay > MaxReplyDelay {
		return nil, fmt.Errorf("connection: reply delay %v: acknowledgements may wait for company at most %v", cfg.ReplyDelay, MaxReplyDelay)
	}
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
		history: newHistory(cfg.HistorySize, cfg.HistoryTTL),
		latest:  newLatestFanout(),
	}
	_, s.resettable = cfg.Bus.(bus.Resetter)
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

// Draining reports whether Shutdown has begun: the server refuses new
// links and is closing its open ones. A /connect picker skips it.
func (s *Server) Draining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopping
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
	if err := s.start(); err != nil {
		s.log.Error("starting the WebSocket transport", "err", err)
		problem.Write(w, http.StatusInternalServerError, "the control-link transport is not available")
		return
	}
	now := time.Now()
	l := &link{srv: s, openedAt: now.UnixNano(), pending: requestFacts(r, now),
		spread: mrand.Int64N(int64(s.cfg.PingInterval)/2 + 1)}
	var coder *coderConn
	// A TLS connection has no socket of its own to poll: such links (a
	// listener that terminates TLS itself) take the coder transport.
	if s.cfg.Transport == TransportCoder || r.TLS != nil {
		c, err := acceptCoder(w, r, s, l)
		if err != nil {
			s.metrics.rejected.WithLabelValues("upgrade").Inc()
			return // Accept has answered the request
		}
		coder, l.ws = c, c
	} else {
		c, err := s.epoll.Upgrade(w, r, l)
		if err != nil {
			s.metrics.rejected.WithLabelValues("upgrade").Inc()
			s.log.Debug("upgrade refused", "err", err)
			return // Upgrade has answered the request
		}
		l.ws = c
	}
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		l.ws.Close(closeServiceRestart, "service restart")
		if coder != nil {
			coder.serve()
		} else {
			l.ws.(*wsepoll.Conn).Discard()
		}
		return
	}
	s.conns[l] = struct{}{}
	s.mu.Unlock()
	s.wheel.schedule(l, l.openedAt+int64(s.cfg.HelloTimeout))
	if coder != nil {
		coder.serve() // this goroutine reads until the link ends
		return
	}
	if err := l.ws.(*wsepoll.Conn).Start(); err != nil {
		s.log.Warn("registering a link with the poller", "err", err)
		l.OnClose(nil, wsepoll.CloseInfo{Err: err})
	}
}

// start creates the transport and the timing wheel on the first link, so
// that a server that never serves starts no goroutine.
func (s *Server) start() error {
	s.startOnce.Do(func() {
		if s.cfg.Transport == TransportEpoll {
			s.epoll, s.startErr = wsepoll.New(wsepoll.Config{
				MaxMessage:   s.cfg.MaxMessage,
				QueueSoft:    s.cfg.QueueSoft,
				QueueHard:    s.cfg.QueueHard,
				WriteTimeout: s.cfg.WriteTimeout,
				DeferDelay:   s.cfg.ReplyDelay,
				// Acks wait for company only while the server is busy.
				WriteDeferredWhenQuiet: true,
				OnRoundEnd:             s.up.roundEnd,
				PlainSyscalls:          s.cfg.PlainSyscalls,
				Logger:                 s.log,
			})
			if s.startErr != nil {
				return
			}
			if s.epoll.Batched() {
				s.metrics.ioUring.Set(1)
			}
		}
		tick := min(100*time.Millisecond, s.cfg.HelloTimeout/4, s.cfg.PingInterval/4)
		tick = max(tick, 5*time.Millisecond)
		s.wheel = newWheel(tick, max(s.cfg.HelloTimeout, s.cfg.PingInterval))
		go s.wheel.run()
	})
	return s.startErr
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

func requestFacts(r *http.Request, now time.Time) *groups.Facts {
	f := &groups.Facts{
		IP:             r.RemoteAddr,
		UserAgent:      r.UserAgent(),
		AcceptLanguage: r.Header.Get("Accept-Language"),
		Origin:         r.Header.Get("Origin"),
		OpenedAt:       now.UTC(),
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
// new profile upward.
func (s *Server) hello(l *link, h *control.Hello, frame []byte) {
	id, token, _, err := s.cfg.Identity.Resolve(h.Token)
	if err != nil {
		s.log.Error("issuing an identity", "err", err)
		l.close(control.CloseInternalError, "cannot issue an identity", "internal")
		return
	}
	sid, err := newSID()
	if err != nil {
		l.close(control.CloseInternalError, "cannot issue a session id", "internal")
		return
	}
	facts := l.pending
	facts.Hello = append(json.RawMessage(nil), frame...)
	var factsJSON []byte
	if s.resettable {
		// Kept only where a bus reset can make the link's re-announcement
		// necessary: it is the largest part of a link's memory.
		factsJSON, _ = json.Marshal(facts)
	}
	attrs := groups.Attrs{groups.AttrConn: s.cfg.ID}
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		l.close(closeServiceRestart, "service restart", "shutdown")
		return
	}
	l.mu.Lock()
	if l.closing || l.gone {
		l.mu.Unlock()
		s.mu.Unlock()
		return
	}
	l.sid, l.uid, l.streams, l.facts = sid, id.UID, id.Streams, factsJSON
	l.pending = nil
	l.mu.Unlock()
	s.bySid[sid] = l
	s.mu.Unlock()
	s.index.Add(l, attrs)
	s.metrics.links.Inc()
	s.metrics.messagesIn.WithLabelValues(control.TypeHello).Inc()
	l.sendOne(control.Encode(control.Welcome{Sid: sid, UID: id.UID, Token: token}), true)
	s.up.add(groups.LinkOpened(s.cfg.ID, sid, id.UID, id.Streams, *facts, attrs))
}

// resumed is the answer to resume: a welcome naming the link again (no
// token: the one from the hello's welcome stands) and whether every
// message the client missed was replayed before it.
type resumed struct {
	Sid       string `json:"sid"`
	UID       string `json:"uid"`
	Recovered bool   `json:"recovered"`
}

func (resumed) MessageType() string { return control.TypeWelcome }

// maxResumeGroups bounds the work one resume can ask for.
const maxResumeGroups = 64

// resume replays, for each group the client names, the messages after its
// offset that this server still holds, then answers welcome with
// recovered. It reports whether everything was recovered; if not, the
// caller relays the resume upward so that the application re-sends the
// link's current state. Replay is limited to groups the link belongs to
// now, stream groups its identity may watch (a reconnecting client is
// not back in its stream group until its watch is handled), and global.
func (s *Server) resume(l *link, r *control.Resume, now int64) bool {
	ep := r.Epochs
	l.mu.Lock()
	sid, uid, streams := l.sid, l.uid, l.streams
	l.mu.Unlock()
	mine := s.index.GroupsOf(l)
	recovered := len(r.Offsets) <= maxResumeGroups
	replayed := 0
	if recovered {
		// Sorted for a deterministic replay order across groups.
		ids := make([]string, 0, len(r.Offsets))
		for g := range r.Offsets {
			ids = append(ids, g)
		}
		slices.Sort(ids)
		for _, g := range ids {
			if !mayReplay(g, mine, streams) {
				recovered = false
				continue
			}
			e, hasEp := ep[g]
			frames, ok := s.history.since(g, e, r.Offsets[g], now)
			ok = ok && hasEp
			if !ok {
				recovered = false
				continue
			}
			for _, f := range frames {
				if !l.deliver(f, "", true) {
					return true // closed as too slow; nothing more to do
				}
				replayed++
			}
		}
	}
	s.metrics.resumes.WithLabelValues(strconv.FormatBool(recovered)).Inc()
	s.metrics.replayed.Add(float64(replayed))
	l.sendOne(control.Encode(resumed{Sid: sid, UID: uid, Recovered: recovered}), true)
	return recovered
}

func mayReplay(g string, mine, streams []string) bool {
	if _, found := slices.BinarySearch(mine, g); found {
		return true
	}
	if attr, v, ok := groups.SplitAutoID(g); ok && attr == groups.AttrStream {
		return streams == nil || slices.Contains(streams, v)
	}
	return false
}

// unregister forgets a link that has ended and relays the close upward.
func (s *Server) unregister(l *link, code int, reason string) {
	l.mu.Lock()
	sid := l.sid
	l.mu.Unlock()
	s.mu.Lock()
	delete(s.conns, l)
	registered := sid != "" && s.bySid[sid] == l
	if registered {
		delete(s.bySid, sid)
	}
	if s.drained != nil && len(s.conns) == 0 {
		close(s.drained)
		s.drained = nil
	}
	s.mu.Unlock()
	if !registered {
		return
	}
	s.index.Remove(l)
	s.metrics.links.Dec()
	s.up.add(groups.LinkClosed(s.cfg.ID, sid, code, reason))
}

// internAttrs makes attribute names and values canonical strings: a
// hundred thousand links share a few hundred distinct values, and each
// would otherwise hold its own copies, decoded from its own mirror message.
func internAttrs(a groups.Attrs) groups.Attrs {
	out := make(groups.Attrs, len(a))
	for k, v := range a {
		out[unique.Make(k).Value()] = unique.Make(v).Value()
	}
	return out
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

// Run consumes this server's downward topic and the broadcast topic until
// ctx ends or Shutdown. When the bus can lose its shared state
// (bus.Resetter), every reset is answered by re-announcing the open links.
func (s *Server) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()

	latestDone := make(chan struct{})
	go func() {
		defer close(latestDone)
		s.latest.run(ctx, func(ls latestSend) { s.fanout(ls.group, ls.frame, ls.key, false, true) })
	}()
	defer func() { <-latestDone }()
	errc := make(chan error, 2)
	for _, topic := range []string{bus.Downward(s.cfg.ID), bus.Broadcast} {
		go func() { errc <- s.cfg.Bus.Subscribe(ctx, topic, s.cfg.ID, s.handleDown) }()
	}
	var resets <-chan struct{}
	if r, ok := s.cfg.Bus.(bus.Resetter); ok {
		resets = r.Resets()
	}
	sweep := time.NewTicker(max(s.cfg.HistoryTTL/4, time.Second))
	defer sweep.Stop()
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
		case _, ok := <-resets:
			if !ok {
				resets = nil
				continue
			}
			n := s.reannounce()
			s.log.Info("bus reset: re-announced open links", "links", n)
		case now := <-sweep.C:
			s.history.sweep(now.UnixNano())
		}
	}
	cancel()
	for ; running > 0; running-- {
		<-errc
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("connection: consuming the bus: %w", err)
	}
	return nil
}

// reannounce sends an open message for every link that said hello, with
// its raw facts and current attributes, so that an application server that
// lost its profiles in a bus reset rebuilds them.
func (s *Server) reannounce() int {
	s.mu.Lock()
	links := make([]*link, 0, len(s.bySid))
	for _, l := range s.bySid {
		links = append(links, l)
	}
	s.mu.Unlock()
	n := 0
	for _, l := range links {
		attrs, ok := s.index.Attrs(l)
		if !ok {
			continue
		}
		if m, ok := l.announcement(s.cfg.ID, attrs); ok {
			s.up.add(m)
			n++
		}
	}
	s.metrics.reannounced.Add(float64(n))
	return n
}

// handleDown applies a batch of downward mirror messages. A message that
// cannot be decoded is logged and skipped: refusing the batch would only
// have it redelivered forever.
func (s *Server) handleDown(_ context.Context, batch []bus.Message) error {
	for _, bm := range batch {
		if groups.IsBatch(bm.Data) {
			if groups.IsCommitted(bm.Data) {
				s.applyCommitted(bm)
			} else {
				s.applySends(bm)
			}
			continue
		}
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

// sendScratch is what applySends reuses from one batch to the next.
type sendScratch struct {
	refs  []groups.SendRef
	links []*link
	frame []byte
}

var sendScratchPool = sync.Pool{New: func() any { return new(sendScratch) }}

// applySends delivers an OpSends batch (acks of votes relayed one by one,
// errors): links are looked
// up under one lock for the whole batch, and each frame is built in place
// with its link's seq.
func (s *Server) applySends(bm bus.Message) {
	sc := sendScratchPool.Get().(*sendScratch)
	defer sendScratchPool.Put(sc)
	var err error
	sc.refs, err = groups.DecodeSends(bm.Data, sc.refs[:0])
	if err != nil {
		s.metrics.busErrors.Inc()
		s.log.Warn("skipping a bad downward batch", "id", bm.ID, "err", err)
		return
	}
	sc.links = sc.links[:0]
	s.mu.Lock()
	for _, r := range sc.refs {
		sc.links = append(sc.links, s.bySid[string(r.Link)])
	}
	s.mu.Unlock()
	for i, r := range sc.refs {
		l := sc.links[i]
		if l == nil {
			continue
		}
		if r.Wait {
			sc.frame = l.deferOne(sc.frame, r.Payload)
		} else {
			l.sendOne(r.Payload, r.Critical)
		}
	}
	s.metrics.linkSends.Add(float64(len(sc.refs)))
	clear(sc.links)
	clear(sc.refs)
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
			s.index.Update(l, internAttrs(m.Attrs))
		}
	case groups.OpDefine:
		if _, err := s.index.Define(groups.Group{ID: m.Group, Pred: m.Pred}); err != nil {
			s.log.Warn("bad group definition", "group", m.Group, "err", err)
		}
	case groups.OpUndefine:
		s.index.Undefine(m.Group)
	case groups.OpSendLink:
		if l := s.linkBySid(m.Link); l != nil {
			l.sendOne(m.Payload, m.Critical)
		}
	case groups.OpSendGroup:
		s.sendGroup(m.Group, m.Payload, m.Critical)
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

// sendGroup writes one group message to every member link. Latest-state
// messages (poll results) go to the latestFanout's goroutine; others are
// written here once the messages queued there before them are out.
func (s *Server) sendGroup(group string, payload []byte, critical bool) {
	head := parseGroupHead(payload)
	key := head.latestKey()
	frame := newFrame(payload)
	s.history.add(group, head, key, frame, time.Now().UnixNano())
	if !critical && key != "" && s.latest.push(latestSend{group: group, key: key, frame: frame}) {
		return
	}
	s.latest.waitIdle(s.ctx)
	s.fanout(group, frame, key, critical, false)
}

// backgroundBatch is how many links a background fan-out writes between
// yields: one ring submission's worth, about a millisecond.
const backgroundBatch = 256

// fanout writes a group's frame to every member link: the same bytes go to
// each link, found through the index. Large groups are split over a
// goroutine per core, each writing its share directly (non-blocking) to
// the sockets; in the background (latest-state sends), one goroutine
// writes them all and yields between batches, so that reading the links
// and counting votes never wait long behind it.
func (s *Server) fanout(group string, frame []byte, key string, critical, background bool) {
	members := s.index.Members(group)
	n := len(members)
	if n == 0 {
		return
	}
	deliver := func(part []*link) {
		b := s.epoll.Batch()
		defer b.Release()
		for i, l := range part {
			if background && i > 0 && i%backgroundBatch == 0 {
				runtime.Gosched()
			}
			l.deliverVia(b, frame, key, critical)
		}
	}
	shards := min((n+s.cfg.FanoutShard-1)/s.cfg.FanoutShard, runtime.GOMAXPROCS(0))
	if background {
		shards = 1
	}
	if shards <= 1 {
		deliver(members)
	} else {
		// The first share is written on this goroutine: one hand-off fewer
		// before the first bytes leave.
		var wg sync.WaitGroup
		per := (n + shards - 1) / shards
		for i := per; i < n; i += per {
			part := members[i:min(i+per, n)]
			wg.Add(1)
			go func() {
				defer wg.Done()
				deliver(part)
			}()
		}
		deliver(members[:per])
		wg.Wait()
	}
	s.metrics.messagesOut.Add(float64(n))
	s.metrics.fanouts.Inc()
}

// Shutdown drains the server for a rolling restart: new links are refused
// (503) from the start, and open ones are closed with 1012 "service
// restart", spread evenly over DrainWindow (shortened to fit ctx), so that
// their jittered reconnects through /connect reach other servers gradually.
// It then waits for the close handshakes (or ctx), relays the closes
// upward and stops every goroutine it started.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.stopping = true
	links := make([]*link, 0, len(s.conns))
	for l := range s.conns {
		links = append(links, l)
	}
	drained := make(chan struct{})
	if len(s.conns) == 0 {
		close(drained)
	} else {
		s.drained = drained
	}
	s.mu.Unlock()

	window := s.cfg.DrainWindow
	if dl, ok := ctx.Deadline(); ok {
		window = min(window, time.Until(dl)/2)
	}
	mrand.Shuffle(len(links), func(i, j int) { links[i], links[j] = links[j], links[i] })
	start := time.Now()
	var err error
	for i, l := range links {
		if window > 0 && len(links) > 1 {
			due := start.Add(window * time.Duration(i) / time.Duration(len(links)))
			if d := time.Until(due); d > time.Millisecond {
				select {
				case <-time.After(d):
				case <-ctx.Done():
				}
			}
		}
		l.close(closeServiceRestart, "service restart", "shutdown")
	}
	select {
	case <-drained:
	case <-ctx.Done():
		err = ctx.Err()
		s.mu.Lock()
		for l := range s.conns {
			l.ws.Abort()
		}
		s.mu.Unlock()
	}
	s.cancel() // ends Run and the coder transport's reads and writes
	s.handlers.Wait()
	if s.epoll != nil {
		s.epoll.Close()
	}
	s.writers.Wait()
	if s.wheel != nil {
		s.wheel.close()
		<-s.wheel.done
	}
	s.up.stop(ctx)
	return err
}
