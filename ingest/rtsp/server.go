package rtsp

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/backchannel/backchannel/ingest"
	"github.com/backchannel/backchannel/ingest/rtsp/wire"
	"github.com/backchannel/backchannel/internal/keys"
	"github.com/backchannel/backchannel/internal/media"
)

// DigestChecker is a KeyChecker that also checks RTSP Digest credentials:
// match is given the HA1 of each candidate key and reports whether the
// client's response fits it. internal/keys and ingest.MasterKey implement
// it; without it only Basic credentials and ?key= work.
type DigestChecker interface {
	IdentifyDigest(stream, username string, match func(ha1 string) bool) (id string, ok bool)
}

// KeyValidator tells whether a key id still authorizes a stream, so that a
// publisher is checked again at RECORD (its key may have been revoked since
// ANNOUNCE).
type KeyValidator interface {
	Valid(stream, id string) bool
}

// Config configures an RTSP server.
type Config struct {
	// Addr is the TCP listen address; default ":8554".
	Addr string
	// UDPAddr is where RTP over UDP is received and sent (RTCP on the next
	// port); the port must be even. Default: a free pair on Addr's host.
	// "off" disables UDP transport (SETUP asking for it gets 461).
	UDPAddr  string
	Node     string
	Registry *media.Registry
	Keys     ingest.KeyChecker
	// SessionTimeout ends sessions without activity (requests, RTP or
	// RTCP from the client); default 60 s. Sessions playing over TCP are
	// bound to their connection instead.
	SessionTimeout time.Duration
	// MaxConnections bounds open connections; default 1024.
	MaxConnections int
	// MaxSessions bounds sessions; more SETUPs get 453; default 512.
	MaxSessions int
	Logger      *slog.Logger
	Metrics     prometheus.Registerer // nil: a private registry
}

// Defaults.
const (
	DefaultAddr           = ":8554"
	DefaultSessionTimeout = 60 * time.Second
	// requestTimeout bounds reading one request once its first byte came,
	// so a slow client cannot hold a connection open half a request at a
	// time.
	requestTimeout = 10 * time.Second
	writeTimeout   = 5 * time.Second
	// describeWait is how long DESCRIBE waits for an on-demand stream to
	// come on air.
	describeWait  = 8 * time.Second
	nonceLifetime = 10 * time.Minute
)

// Server is an RTSP server publishing into, and serving from, a registry.
type Server struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	ln      net.Listener
	udp     *udpPair
	nonce   [32]byte

	wg      sync.WaitGroup
	done    chan struct{}
	closeMu sync.Once

	mu       sync.Mutex
	conns    map[*conn]struct{}
	sessions map[string]*session
	closed   bool
}

// Listen binds the server's sockets and starts serving.
func Listen(cfg Config) (*Server, error) {
	switch {
	case cfg.Registry == nil:
		return nil, errors.New("rtsp: Config.Registry is required")
	case cfg.Keys == nil:
		return nil, errors.New("rtsp: Config.Keys is required")
	}
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.SessionTimeout <= 0 {
		cfg.SessionTimeout = DefaultSessionTimeout
	}
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = 1024
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = 512
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
	s := &Server{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "rtsp", "node", cfg.Node),
		metrics:  m,
		done:     make(chan struct{}),
		conns:    map[*conn]struct{}{},
		sessions: map[string]*session{},
	}
	if _, err := rand.Read(s.nonce[:]); err != nil {
		return nil, err
	}
	s.ln, err = net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("rtsp: %w", err)
	}
	if cfg.UDPAddr != "off" {
		addr := cfg.UDPAddr
		if addr == "" {
			host, _, _ := net.SplitHostPort(cfg.Addr)
			addr = net.JoinHostPort(host, "0")
		}
		s.udp, err = listenUDPPair(addr)
		if err != nil {
			s.ln.Close()
			return nil, err
		}
		s.udp.dropped = func() { m.dropped.WithLabelValues("unknown_source").Inc() }
		s.udp.start()
	}
	s.wg.Add(2)
	go s.accept()
	go s.janitor()
	rtp, rtcp := s.UDPPorts()
	s.log.Info("RTSP listening", "addr", s.ln.Addr().String(), "udp_rtp", rtp, "udp_rtcp", rtcp)
	return s, nil
}

// Addr is the bound TCP address.
func (s *Server) Addr() *net.TCPAddr { return s.ln.Addr().(*net.TCPAddr) }

// UDPPorts returns the RTP and RTCP ports of UDP transport (0, 0 when off).
func (s *Server) UDPPorts() (rtp, rtcp int) {
	if s.udp == nil {
		return 0, 0
	}
	return s.udp.ports()
}

// Sessions is the number of RTSP sessions.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// Close stops accepting, ends every session and connection, and waits for
// all of the server's goroutines.
func (s *Server) Close() error {
	s.closeMu.Do(func() {
		s.mu.Lock()
		s.closed = true
		conns := make([]*conn, 0, len(s.conns))
		for c := range s.conns {
			conns = append(conns, c)
		}
		s.mu.Unlock()
		close(s.done)
		s.ln.Close()
		for _, c := range conns {
			c.close()
		}
		s.wg.Wait()
		if s.udp != nil {
			s.udp.close()
		}
	})
	return nil
}

func (s *Server) accept() {
	defer s.wg.Done()
	var backoff time.Duration
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			select {
			case <-time.After(backoff):
				continue
			case <-s.done:
				return
			}
		}
		backoff = 0
		c := newConn(s, nc)
		s.mu.Lock()
		full := len(s.conns) >= s.cfg.MaxConnections
		if s.closed || full {
			s.mu.Unlock()
			if full {
				s.metrics.rejections.WithLabelValues("too_many_connections").Inc()
			}
			nc.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.metrics.connections.Set(float64(len(s.conns)))
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			c.serve()
			s.mu.Lock()
			delete(s.conns, c)
			s.metrics.connections.Set(float64(len(s.conns)))
			s.mu.Unlock()
		}()
	}
}

// janitor ends sessions whose client went silent.
func (s *Server) janitor() {
	defer s.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case now := <-t.C:
			s.mu.Lock()
			var expired []*session
			for _, ss := range s.sessions {
				if ss.expired(now, s.cfg.SessionTimeout) {
					expired = append(expired, ss)
				}
			}
			s.mu.Unlock()
			for _, ss := range expired {
				ss.log.Info("RTSP session timed out")
				ss.c.close()
			}
		}
	}
}

// addSession registers a new session; false when at capacity.
func (s *Server) addSession(ss *session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || len(s.sessions) >= s.cfg.MaxSessions {
		return false
	}
	s.sessions[ss.id] = ss
	return true
}

func (s *Server) removeSession(ss *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sessions[ss.id] == ss {
		delete(s.sessions, ss.id)
	}
}

// newNonce returns a Digest nonce the server can check without keeping
// state: the issue time and its MAC.
func (s *Server) newNonce() string {
	var ts [8]byte
	binary.BigEndian.PutUint64(ts[:], uint64(time.Now().Unix()))
	return hex.EncodeToString(ts[:]) + s.nonceMAC(ts[:])
}

func (s *Server) nonceMAC(ts []byte) string {
	m := hmac.New(sha256.New, s.nonce[:])
	m.Write(ts)
	return hex.EncodeToString(m.Sum(nil)[:16])
}

func (s *Server) validNonce(n string) bool {
	if len(n) != 48 {
		return false
	}
	ts, err := hex.DecodeString(n[:16])
	if err != nil || !hmac.Equal([]byte(s.nonceMAC(ts)), []byte(n[16:])) {
		return false
	}
	age := time.Since(time.Unix(int64(binary.BigEndian.Uint64(ts)), 0))
	return age >= -time.Minute && age < nonceLifetime
}

// challenges are the WWW-Authenticate values of a 401: Digest when the
// key checker can verify it, and Basic.
func (s *Server) challenges() []string {
	var out []string
	if _, ok := s.cfg.Keys.(DigestChecker); ok {
		out = append(out, fmt.Sprintf(`Digest realm="%s", nonce="%s"`, keys.DigestRealm, s.newNonce()))
	}
	return append(out, fmt.Sprintf(`Basic realm="%s"`, keys.DigestRealm))
}

// authorize checks a publish request's key: ?key= in the URL, else the
// Authorization header. It returns the key id and, for rechecks, the key
// itself (empty for Digest, which is rechecked by id).
func (s *Server) authorize(req *wire.Request, stream, rawQuery string) (id, secret string, status int, detail string) {
	if key := queryKey(rawQuery); key != "" {
		if id, ok := ingest.IdentifyKey(s.cfg.Keys, stream, key); ok {
			return id, key, 0, ""
		}
		return "", "", wire.StatusUnauthorized, "this key may not publish to " + stream
	}
	h := req.Header.Get("Authorization")
	if h == "" {
		return "", "", wire.StatusUnauthorized, "give the stream key as ?key=<key> or as the password of RTSP credentials"
	}
	cred, err := wire.ParseAuthorization(h)
	if err != nil {
		return "", "", wire.StatusUnauthorized, err.Error()
	}
	switch cred.Scheme {
	case "basic":
		if id, ok := ingest.IdentifyKey(s.cfg.Keys, stream, cred.Password); ok {
			return id, cred.Password, 0, ""
		}
	case "digest":
		dc, ok := s.cfg.Keys.(DigestChecker)
		if !ok || cred.Realm != keys.DigestRealm || !s.validNonce(cred.Nonce) {
			return "", "", wire.StatusUnauthorized, "stale or foreign Digest nonce"
		}
		if id, ok := dc.IdentifyDigest(stream, cred.Username, func(ha1 string) bool {
			return cred.VerifyDigest(ha1, req.Method)
		}); ok {
			return id, "", 0, ""
		}
	}
	return "", "", wire.StatusUnauthorized, "these credentials may not publish to " + stream
}

// stillAuthorized checks a publisher's key again before it goes live.
func (s *Server) stillAuthorized(stream, id, secret string) bool {
	if v, ok := s.cfg.Keys.(KeyValidator); ok && id != "" {
		return v.Valid(stream, id)
	}
	if secret != "" {
		_, ok := ingest.IdentifyKey(s.cfg.Keys, stream, secret)
		return ok
	}
	// Digest with a checker that cannot validate ids: the master key,
	// which cannot be revoked.
	return true
}
