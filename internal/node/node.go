// Package node assembles Backchannel's tiers into one process. With every
// role and no Redis it is the embedded default (`backchannel all`): one HTTP
// listener for all routes, one ICE port, the in-process bus, optionally the
// demo broadcast. With Redis and a subset of roles it is one node of a
// cluster: the tiers talk over the Redis bus and find each other through
// memberlist gossip. Tests start whole nodes through it.
package node

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/backchannel/backchannel/application"
	"github.com/backchannel/backchannel/connection"
	"github.com/backchannel/backchannel/edge"
	"github.com/backchannel/backchannel/edge/hls"
	"github.com/backchannel/backchannel/edge/relay"
	"github.com/backchannel/backchannel/ingest"
	"github.com/backchannel/backchannel/internal/bus"
	"github.com/backchannel/backchannel/internal/cluster"
	"github.com/backchannel/backchannel/internal/demo"
	"github.com/backchannel/backchannel/internal/geo"
	"github.com/backchannel/backchannel/internal/identity"
	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/problem"
	"github.com/backchannel/backchannel/internal/record"
	"github.com/backchannel/backchannel/internal/rtc"
	"github.com/backchannel/backchannel/internal/store"
	"github.com/backchannel/backchannel/internal/streamsync"
	"github.com/backchannel/backchannel/player"
)

// The roles a node can play.
const (
	RoleIngest      = cluster.RoleIngest
	RoleEdge        = cluster.RoleEdge
	RoleConnection  = cluster.RoleConnection
	RoleApplication = cluster.RoleApplication
)

// AllRoles is the embedded deployment.
var AllRoles = []cluster.Role{RoleIngest, RoleEdge, RoleConnection, RoleApplication}

// Config is a node's configuration. The zero value of every field has a
// working default: the embedded deployment.
type Config struct {
	Roles          []cluster.Role // default AllRoles
	HTTPAddr       string         // default ":8080"
	ICEAddr        string         // ICE UDP mux, ICE-TCP on the same port; default ":8189"
	RTSPAddr       string         // RTSP; default ":8554" (port 0 on the HTTP host when HTTPAddr's port is 0, as in tests)
	PublicIPs      []string
	PublicURL      string // base of every URL handed out; default: relative URLs (single node)
	ICEServers     []webrtc.ICEServer
	DataDir        string // default "./data" (embedded state)
	PublishKey     string // development key for every stream; generated when empty
	OperatorKey    string // operator API key; generated when empty
	IdentitySecret string // signs viewer identities; generated when empty
	AllowedOrigins []string
	WSTransport    string // control-link transport: "epoll" (default) or "coder"
	NoIOUring      bool   // the epoll transport makes one system call per socket read and write
	// ReplyDelay is the longest a vote's ack waits on the connection
	// server for another frame to the same link (connection.Config).
	ReplyDelay time.Duration
	// AudienceInterval is the least time between two poll results
	// messages to one group (application.Config).
	AudienceInterval time.Duration
	Pprof            bool // serve Go's profiler at /debug/pprof/ (operator key required)
	Demo             bool // publish the built-in demo clip as stream "demo" (ingest role)
	NodeID           string
	Logger           *slog.Logger
	GeoIPCity        string // GeoIP2/GeoLite2 City mmdb; empty: geography unknown
	GeoIPASN         string // GeoIP2/GeoLite2 ASN mmdb

	// Cluster. Without RedisAddr every role must be in this process.
	RedisAddr        string   // Redis for the bus and shared state
	ClusterBind      string   // memberlist gossip host:port; "" = no gossip
	ClusterAdvertise string   // host:port other nodes reach the gossip at
	ClusterSeeds     []string // gossip addresses of nodes to join
	Region           string
	Lat, Lon         float64
	Capacity         int // control links this node accepts (connection role)

	// Edge role. In a cluster an edge finds a stream's origin in the
	// cluster's stream view; with Origin it pulls every stream from that
	// base URL (a parent edge, or an ingest node) and needs no Redis.
	Origin      string
	RelayLinger time.Duration // how long a pull outlives the edge's last viewer (default 10 s)
	MaxViewers  int           // WHEP viewers the edge accepts; 0: no cap
	// WHEPPionSRTP sends WHEP media through pion's SRTP session instead
	// of the edge's direct path (edge.Config.PionSRTP).
	WHEPPionSRTP bool
}

// Node is a running node.
type Node struct {
	cfg      Config
	secrets  secrets
	log      *slog.Logger
	listener net.Listener
	http     *http.Server
	metrics  *prometheus.Registry

	bus      bus.Bus
	cluster  *cluster.Node
	cpu      *cluster.CPUMeter
	view     *streamsync.View
	rtc      *rtc.Transport
	registry *media.Registry
	ingest   *ingest.Server
	edge     *edge.Server
	relay    *relay.Relay
	egress   egressMeter
	rtsp     rtspTier
	hls      *hls.Server
	recorder *record.Recorder
	conn     *connection.Server
	app      *application.Server
	appStore store.Store
	geo      *geo.Locator

	cancel context.CancelFunc
	wg     sync.WaitGroup
	errc   chan error
	once   sync.Once
}

// DemoStream is the name the demo broadcast publishes under.
const DemoStream = "demo"

// Start brings the node's tiers up and returns once its listeners accept.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	cfg, err := withDefaults(cfg)
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: cfg.Logger, errc: make(chan error, 8), cpu: cluster.NewCPUMeter()}
	n.metrics = prometheus.NewRegistry()
	// The scheduler latencies show a starved process: runnable goroutines
	// waiting for a thread.
	n.metrics.MustRegister(collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(collectors.MetricsScheduler)), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg := prometheus.WrapRegistererWith(prometheus.Labels{"node": cfg.NodeID}, n.metrics)

	// The listener first: a cluster node announces its own URL.
	n.listener, err = net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("http listener: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	n.cancel = cancel
	if err := n.build(runCtx, reg); err != nil {
		n.stop(context.Background())
		return nil, err
	}
	n.http = &http.Server{
		Handler:           n.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelDebug),
	}
	n.goRun("http", func() error {
		if err := n.http.Serve(n.listener); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	if n.conn != nil {
		n.goRun("connection", func() error { return ignoreCancel(runCtx, n.conn.Run(runCtx)) })
	}
	if n.app != nil {
		n.goRun("application", func() error { return ignoreCancel(runCtx, n.app.Run(runCtx)) })
	}
	if n.rtsp.keys != nil {
		n.goRun("stream keys", func() error { return ignoreCancel(runCtx, n.rtsp.keys.Watch(runCtx)) })
	}
	if n.clustered() {
		n.goRun("secrets keeper", func() error { return ignoreCancel(runCtx, keepSecrets(runCtx, cfg.RedisAddr, n.secrets)) })
	}
	if n.registry != nil && n.clustered() {
		n.goRun("stream announcements", func() error {
			return ignoreCancel(runCtx, streamsync.Announce(runCtx, n.bus, cfg.NodeID, n.registry, 0, n.log))
		})
	}
	if n.view != nil && n.clustered() {
		n.goRun("stream view", func() error {
			return ignoreCancel(runCtx, n.view.Follow(runCtx, n.bus, "streams:"+cfg.NodeID, n.log))
		})
	}
	if cfg.Demo && n.ingest != nil {
		n.goRun("demo", func() error {
			return ignoreCancel(runCtx, demo.Run(runCtx, n.URL()+"/whip/"+DemoStream, n.secrets.PublishKey, n.log))
		})
	}
	return n, nil
}

func ignoreCancel(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func withDefaults(cfg Config) (Config, error) {
	if len(cfg.Roles) == 0 {
		cfg.Roles = AllRoles
	}
	for _, r := range cfg.Roles {
		if !slices.Contains(AllRoles, r) {
			return cfg, fmt.Errorf("unknown role %q", r)
		}
	}
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = ":8080"
	}
	if cfg.ICEAddr == "" {
		cfg.ICEAddr = ":8189"
	}
	cfg.RTSPAddr = defaultRTSPAddr(cfg.RTSPAddr, cfg.HTTPAddr)
	if cfg.DataDir == "" {
		cfg.DataDir = "./data"
	}
	if cfg.NodeID == "" {
		cfg.NodeID = "local"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.PublicURL = strings.TrimRight(cfg.PublicURL, "/")
	edgeOnly := !slices.ContainsFunc(cfg.Roles, func(r cluster.Role) bool { return r != RoleEdge })
	if cfg.RedisAddr == "" && len(cfg.Roles) != len(AllRoles) && !(edgeOnly && cfg.Origin != "") {
		return cfg, errors.New("a node with only some roles needs Redis (--redis) to reach the others (an edge alone: --origin instead)")
	}
	if cfg.ClusterBind != "" && cfg.RedisAddr == "" {
		return cfg, errors.New("cluster gossip needs Redis (--redis) for the bus")
	}
	return cfg, nil
}

func (n *Node) has(r cluster.Role) bool { return slices.Contains(n.cfg.Roles, r) }

// clustered reports whether the tiers talk over Redis rather than in-process.
func (n *Node) clustered() bool { return n.cfg.RedisAddr != "" }

func (n *Node) build(ctx context.Context, reg prometheus.Registerer) error {
	cfg := n.cfg
	var err error
	if n.clustered() {
		rb, err := bus.NewRedis(bus.RedisOptions{Addr: cfg.RedisAddr, Origin: cfg.NodeID + "-" + randomToken(6), Logger: n.log, Metrics: reg})
		if err != nil {
			return fmt.Errorf("redis bus: %w", err)
		}
		n.bus = rb
		if n.secrets, err = loadSharedSecrets(ctx, cfg.RedisAddr, n.log); err != nil {
			return err
		}
	} else {
		// In one process every consumer exists from the start and none
		// restarts, so acknowledged messages need not linger for late
		// consumer groups: a second is plenty, and memory per link stays low.
		n.bus = bus.NewMemoryWith(bus.MemoryOptions{Retention: time.Second})
		if n.secrets, err = loadSecrets(cfg.DataDir); err != nil {
			return err
		}
	}
	n.secrets.override(cfg.PublishKey, cfg.OperatorKey, cfg.IdentitySecret)

	if n.has(RoleIngest) || n.has(RoleEdge) {
		n.rtc, err = rtc.Listen(rtc.Config{ICEAddr: cfg.ICEAddr, PublicIPs: cfg.PublicIPs, ICEServers: cfg.ICEServers, Logger: n.log})
		if err != nil {
			return fmt.Errorf("ice: %w", err)
		}
		n.registry = media.NewRegistry(cfg.NodeID)
	}
	if n.has(RoleIngest) || n.has(RoleApplication) {
		if err := n.openKeys(); err != nil {
			return err
		}
	}
	if n.has(RoleIngest) {
		n.ingest, err = ingest.New(ingest.Config{
			Node: cfg.NodeID, Registry: n.registry, RTC: n.rtc, Keys: n.rtsp.keys,
			PublicURL: cfg.PublicURL, Logger: n.log, Metrics: reg,
		})
		if err != nil {
			return fmt.Errorf("ingest: %w", err)
		}
		if err := n.startRTSP(reg); err != nil {
			return err
		}
		n.recorder, err = record.New(record.Config{Dir: filepath.Join(cfg.DataDir, "recordings"), Registry: n.registry, Logger: n.log, Metrics: reg})
		if err != nil {
			return fmt.Errorf("recordings: %w", err)
		}
	}
	if n.has(RoleEdge) {
		ecfg := edge.Config{ID: cfg.NodeID, Registry: n.registry, RTC: n.rtc, PublicURL: cfg.PublicURL, Logger: n.log, Metrics: reg,
			MaxViewers: cfg.MaxViewers, Siblings: n.siblingEdge, PionSRTP: cfg.WHEPPionSRTP}
		if n.clustered() || cfg.Origin != "" {
			var origins relay.Origins = nodeOrigins{n}
			if cfg.Origin != "" {
				origins = relay.Parent(cfg.Origin)
			}
			n.relay, err = relay.New(relay.Config{Node: cfg.NodeID, Registry: n.registry, Origins: origins, Linger: cfg.RelayLinger, Logger: n.log, Metrics: reg})
			if err != nil {
				return fmt.Errorf("relay: %w", err)
			}
			ecfg.Upstream = n.relay
		}
		n.edge, err = edge.New(ecfg)
		if err != nil {
			return fmt.Errorf("edge: %w", err)
		}
		if n.hls, err = hls.New(hls.Config{Registry: n.registry, Logger: n.log, Metrics: reg}); err != nil {
			return fmt.Errorf("hls: %w", err)
		}
	}
	if cfg.ClusterBind != "" {
		if err := n.joinCluster(reg); err != nil {
			return err
		}
	}
	if n.has(RoleConnection) {
		n.conn, err = connection.New(connection.Config{
			ID: cfg.NodeID, Bus: n.bus, Identity: identity.NewIssuer([]byte(n.secrets.IdentitySecret)),
			AllowedOrigins: cfg.AllowedOrigins, PublicURL: cfg.PublicURL, Logger: n.log, Metrics: reg,
			Transport: cfg.WSTransport, PlainSyscalls: cfg.NoIOUring, ReplyDelay: cfg.ReplyDelay,
		})
		if err != nil {
			return fmt.Errorf("connection: %w", err)
		}
	}
	if n.has(RoleApplication) {
		var edges application.EdgeDirectory = application.StaticEdge{ID: cfg.NodeID, BaseURL: cfg.PublicURL}
		if n.cluster != nil {
			edges = &clusterEdges{cluster: n.cluster}
		}
		if n.geo, err = geo.Open(cfg.GeoIPCity, cfg.GeoIPASN); err != nil {
			return err
		}
		// Polls, votes, groups, branding and API keys: in Redis for a
		// cluster, under the data directory otherwise.
		if n.clustered() {
			n.appStore, err = store.NewRedis(store.RedisOptions{Addr: cfg.RedisAddr})
		} else {
			n.appStore, err = store.OpenFile(filepath.Join(cfg.DataDir, "application"), n.log)
		}
		if err != nil {
			return err
		}
		var recorder application.Recorder
		if n.recorder != nil {
			recorder = n.recorder
		}
		n.app, err = application.New(application.Config{
			Bus: n.bus, Edges: edges, OperatorKey: n.secrets.OperatorKey, Store: n.appStore, Geo: n.geo, Logger: n.log, Metrics: reg,
			Recorder: recorder, StreamInfo: n.streamInfo, AudienceInterval: cfg.AudienceInterval,
		})
		if err != nil {
			return fmt.Errorf("application: %w", err)
		}
	}
	// Where streams are on air: the application tells viewers, an edge's
	// relay finds origins and follows them going off and on air.
	if n.app != nil || (n.relay != nil && n.clustered()) {
		n.view = streamsync.NewView(n.streamEvent)
		if !n.clustered() {
			n.registry.Subscribe(n.view.Local(cfg.NodeID))
		}
	}
	return nil
}

func (n *Node) streamEvent(ev media.Event) {
	if n.app != nil {
		n.app.StreamEvent(ev)
	}
	if n.relay != nil && n.clustered() {
		if ev.Live {
			n.relay.OriginLive(ev.Stream)
		} else {
			n.relay.OriginOffline(ev.Stream)
		}
	}
}

// nodeOrigins finds streams' upstreams in the cluster (see clusterOrigins).
type nodeOrigins struct{ n *Node }

func (o nodeOrigins) Find(stream string) []relay.Upstream {
	n := o.n
	if n.cluster == nil || n.view == nil {
		return nil
	}
	return clusterOrigins{self: n.selfMeta(), cluster: n.cluster, view: n.view}.Find(stream)
}

// siblingEdge names another edge with room, for a full one to redirect to.
func (n *Node) siblingEdge(stream string) (string, bool) {
	if n.cluster == nil {
		return "", false
	}
	return siblings{cluster: n.cluster, self: n.selfMeta()}.find(stream)
}

func (n *Node) selfMeta() cluster.Meta {
	return cluster.Meta{ID: n.cfg.NodeID, Region: n.cfg.Region, Lat: n.cfg.Lat, Lon: n.cfg.Lon}
}

func (n *Node) joinCluster(reg prometheus.Registerer) error {
	cfg := n.cfg
	host, portStr, err := net.SplitHostPort(cfg.ClusterBind)
	if err != nil {
		return fmt.Errorf("--cluster-bind %q: %w", cfg.ClusterBind, err)
	}
	var port int
	if _, err := fmt.Sscan(portStr, &port); err != nil {
		return fmt.Errorf("--cluster-bind %q: bad port", cfg.ClusterBind)
	}
	base := n.PublicBase()
	meta := cluster.Meta{ID: cfg.NodeID, Roles: cfg.Roles, URL: base, Region: cfg.Region, Lat: cfg.Lat, Lon: cfg.Lon}
	if n.has(RoleConnection) {
		meta.WS = wsURL(base)
	}
	n.cluster, err = cluster.Join(cluster.Config{
		Meta: meta, BindAddr: host, BindPort: port, Advertise: cfg.ClusterAdvertise, Seeds: cfg.ClusterSeeds,
		LoadFunc: n.load, Logger: n.log, Metrics: reg,
	})
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	return nil
}

// load is what the node announces about how busy it is.
func (n *Node) load() cluster.Load {
	l := cluster.Load{Capacity: n.cfg.Capacity, CPU: n.cpu.Sample()}
	if n.conn != nil {
		l.Links = n.conn.Links()
	}
	if n.edge != nil {
		l.Viewers = n.edge.Viewers()
		l.ViewerCap = n.cfg.MaxViewers
		_, bytes := n.edge.Sent()
		l.Egress = n.egress.kbps(bytes)
	}
	return l
}

// egressMeter turns the edge's sent-bytes counter into a bitrate between
// two load samples.
type egressMeter struct {
	mu    sync.Mutex
	at    time.Time
	bytes uint64
}

func (m *egressMeter) kbps(bytes uint64) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	defer func() { m.at, m.bytes = now, bytes }()
	if m.at.IsZero() || bytes < m.bytes {
		return 0
	}
	secs := now.Sub(m.at).Seconds()
	if secs <= 0 {
		return 0
	}
	return int(float64(bytes-m.bytes) * 8 / 1000 / secs)
}

func wsURL(base string) string {
	u, err := url.Parse(base)
	if err != nil {
		return ""
	}
	switch u.Scheme {
	case "https":
		u.Scheme = "wss"
	default:
		u.Scheme = "ws"
	}
	u.Path = strings.TrimRight(u.Path, "/") + "/ws"
	return u.String()
}

func (n *Node) routes() http.Handler {
	mux := http.NewServeMux()
	if n.ingest != nil {
		mux.Handle("/whip/", n.ingest.Handler())
	}
	if n.edge != nil {
		mux.Handle("/whep/", n.edge.Handler())
	}
	if n.hls != nil {
		mux.Handle("/hls/", n.pullFirst(n.hls.Handler()))
	}
	if n.recorder != nil {
		mux.Handle("/hls/recordings/", n.recorder.Handler())
	}
	if n.conn != nil {
		mux.Handle("/ws", n.conn.Handler())
	}
	switch {
	case n.cluster != nil:
		mux.Handle("/connect", n.cluster.ConnectHandler())
	case n.conn != nil:
		mux.Handle("/connect", n.conn.ConnectHandler())
	}
	if n.app != nil {
		n.app.Routes(mux)
		var pulls application.Pulls
		if n.rtsp.puller != nil {
			pulls = pullAPI{n.rtsp.puller}
		}
		n.app.StreamKeyRoutes(mux, n.rtsp.keys, pulls)
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.metrics, promhttp.HandlerOpts{Registry: n.metrics}))
	mux.HandleFunc("GET /healthz", n.healthz)
	if n.cfg.Pprof {
		mux.Handle("/debug/pprof/", n.operatorOnly(http.HandlerFunc(pprof.Index)))
		for name, h := range map[string]http.HandlerFunc{"cmdline": pprof.Cmdline, "profile": pprof.Profile, "symbol": pprof.Symbol, "trace": pprof.Trace} {
			mux.Handle("/debug/pprof/"+name, n.operatorOnly(h))
		}
	}
	mux.Handle("/", player.Handler())
	return mux
}

// streamInfo describes a live stream for the API: from this node's registry
// when it has the stream, else from the cluster's announcements.
func (n *Node) streamInfo(name string) (media.StreamInfo, bool) {
	if n.registry != nil {
		// Current, not Lookup: describing a stream is no demand for it
		// (an edge would pull it).
		if st, ok := n.registry.Current(name); ok && st.Live() && st.Info().Protocol != media.ProtocolRelay {
			return st.Info(), true
		}
	}
	if n.view != nil && n.clustered() {
		return n.view.Info(name)
	}
	return media.StreamInfo{}, false
}

// operatorOnly admits requests bearing the operator key.
func (n *Node) operatorOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if subtle.ConstantTimeCompare([]byte(token), []byte(n.secrets.OperatorKey)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="backchannel"`)
			problem.Write(w, http.StatusUnauthorized, "send the operator key as Authorization: Bearer <key>")
			return
		}
		h.ServeHTTP(w, r)
	})
}

// pullFirst lets an HLS request for a stream this edge does not have wait
// for the relay to bring it, instead of answering 404 to a player that
// would retry anyway.
func (n *Node) pullFirst(h http.Handler) http.Handler {
	if n.relay == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		stream, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/hls/"), "/")
		if media.ValidStreamName(stream) && stream != "recordings" {
			if st, ok := n.registry.Current(stream); !ok || !st.Live() {
				ctx, cancel := context.WithTimeout(r.Context(), edge.DefaultUpstreamWait)
				_ = n.relay.Pull(ctx, stream)
				cancel()
			}
		}
		h.ServeHTTP(w, r)
	})
}

func (n *Node) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	links, viewers, streams, relays := 0, 0, 0, 0
	if n.conn != nil {
		links = n.conn.Links()
	}
	if n.edge != nil {
		viewers = n.edge.Viewers()
	}
	if n.registry != nil {
		streams = len(n.registry.List())
	}
	if n.relay != nil {
		relays = len(n.relay.Streams())
	}
	roles := make([]string, len(n.cfg.Roles))
	for i, r := range n.cfg.Roles {
		roles[i] = `"` + string(r) + `"`
	}
	fmt.Fprintf(w, `{"status":"ok","node":%q,"roles":[%s],"links":%d,"viewers":%d,"streams":%d,"relays":%d}`+"\n",
		n.cfg.NodeID, strings.Join(roles, ","), links, viewers, streams, relays)
}

func (n *Node) goRun(name string, fn func() error) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := fn(); err != nil {
			n.log.Error("component stopped", "component", name, "err", err)
			select {
			case n.errc <- fmt.Errorf("%s: %w", name, err):
			default:
			}
		}
	}()
}

// URL is the node's base URL on its own listener (loopback), for local clients.
func (n *Node) URL() string {
	addr := n.listener.Addr().(*net.TCPAddr)
	host := "127.0.0.1"
	if !addr.IP.IsUnspecified() {
		host = addr.IP.String()
	}
	return "http://" + net.JoinHostPort(host, fmt.Sprint(addr.Port))
}

// PublicBase is the base URL people and other nodes use: the public URL
// when set, else the listener's address.
func (n *Node) PublicBase() string {
	if n.cfg.PublicURL != "" {
		return n.cfg.PublicURL
	}
	addr := n.listener.Addr().(*net.TCPAddr)
	if addr.IP.IsUnspecified() {
		return fmt.Sprintf("http://localhost:%d", addr.Port)
	}
	return n.URL()
}

// ID is the node's id.
func (n *Node) ID() string { return n.cfg.NodeID }

// PublishKey is the development publish key accepted for every stream.
func (n *Node) PublishKey() string { return n.secrets.PublishKey }

// OperatorKey is the operator API key.
func (n *Node) OperatorKey() string { return n.secrets.OperatorKey }

// ICEAddr is the bound ICE UDP address, nil on a node without media roles.
func (n *Node) ICEAddr() *net.UDPAddr {
	if n.rtc == nil {
		return nil
	}
	return n.rtc.Addr()
}

// GossipAddr is the bound memberlist address, "" without a cluster.
func (n *Node) GossipAddr() string {
	if n.cluster == nil {
		return ""
	}
	return n.cluster.Addr()
}

// Registry is the node's stream registry, nil on a node without media roles.
func (n *Node) Registry() *media.Registry { return n.registry }

// Roles are the roles the node plays.
func (n *Node) Roles() []cluster.Role { return n.cfg.Roles }

// Err reports the first component failure.
func (n *Node) Err() <-chan error { return n.errc }

// Shutdown stops the node gracefully: it leaves the cluster first so no new
// links are sent here, drains its control links, ends media sessions, and
// waits for every component goroutine.
func (n *Node) Shutdown(ctx context.Context) error {
	var err error
	n.once.Do(func() { err = n.stop(ctx) })
	return err
}

func (n *Node) stop(ctx context.Context) error {
	var errs []error
	if n.cluster != nil {
		if err := n.cluster.Leave(2 * time.Second); err != nil {
			errs = append(errs, fmt.Errorf("cluster leave: %w", err))
		}
	}
	if n.conn != nil {
		if err := n.conn.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("connection: %w", err))
		}
	}
	if n.cancel != nil {
		n.cancel()
	}
	if n.http != nil {
		if err := n.http.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("http: %w", err))
		}
	} else if n.listener != nil {
		n.listener.Close()
	}
	n.closeRTSP()
	if n.hls != nil {
		n.hls.Close()
	}
	if n.recorder != nil {
		n.recorder.Close()
	}
	if n.ingest != nil {
		n.ingest.Close()
	}
	if n.edge != nil {
		n.edge.Close()
	}
	if n.relay != nil {
		n.relay.Close()
	}
	if n.rtc != nil {
		n.rtc.Close()
	}
	n.wg.Wait()
	if n.appStore != nil {
		n.appStore.Close()
	}
	n.geo.Close()
	if n.bus != nil {
		n.bus.Close()
	}
	if n.cluster != nil {
		n.cluster.Close()
	}
	return errors.Join(errs...)
}
