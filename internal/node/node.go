// Package node assembles every tier into one process, the embedded default
// deployment (`backchannel all`): one HTTP listener for all routes, one ICE
// port, the in-process bus between the connection and application tiers, and
// optionally the demo broadcast. Tests start whole nodes through it.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
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
	"github.com/backchannel/backchannel/ingest"
	"github.com/backchannel/backchannel/internal/bus"
	"github.com/backchannel/backchannel/internal/demo"
	"github.com/backchannel/backchannel/internal/identity"
	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/rtc"
	"github.com/backchannel/backchannel/player"
)

// Config is the embedded node's configuration. The zero value of every field
// has a working default.
type Config struct {
	HTTPAddr       string // default ":8080"
	ICEAddr        string // ICE UDP mux, ICE-TCP on the same port; default ":8189"
	RTSPAddr       string // RTSP; default ":8554" (port 0 on the HTTP host when HTTPAddr's port is 0, as in tests)
	PublicIPs      []string
	PublicURL      string // base of every URL handed out; default: relative URLs
	ICEServers     []webrtc.ICEServer
	DataDir        string // default "./data"
	PublishKey     string // development key for every stream; generated when empty
	OperatorKey    string // operator API key; generated when empty
	AllowedOrigins []string
	Demo           bool // publish the built-in demo clip as stream "demo"
	NodeID         string
	Logger         *slog.Logger
}

// Node is a running embedded deployment.
type Node struct {
	cfg      Config
	secrets  secrets
	log      *slog.Logger
	listener net.Listener
	http     *http.Server
	rtc      *rtc.Transport
	registry *media.Registry
	ingest   *ingest.Server
	edge     *edge.Server
	rtsp     rtspTier
	conn     *connection.Server
	app      *application.Server
	metrics  *prometheus.Registry

	cancel context.CancelFunc
	wg     sync.WaitGroup
	errc   chan error
	once   sync.Once
}

// DemoStream is the name the demo broadcast publishes under.
const DemoStream = "demo"

// Start brings every tier up and returns once the listeners accept.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	cfg = withDefaults(cfg)
	n := &Node{cfg: cfg, log: cfg.Logger, errc: make(chan error, 4)}
	sec, err := loadSecrets(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	if cfg.PublishKey != "" {
		sec.PublishKey = cfg.PublishKey
	}
	if cfg.OperatorKey != "" {
		sec.OperatorKey = cfg.OperatorKey
	}
	n.secrets = sec

	n.metrics = prometheus.NewRegistry()
	n.metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg := prometheus.WrapRegistererWith(prometheus.Labels{"node": cfg.NodeID}, n.metrics)

	if err := n.build(reg); err != nil {
		n.closeTiers()
		return nil, err
	}

	n.listener, err = net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		n.closeTiers()
		return nil, fmt.Errorf("http listener: %w", err)
	}
	n.http = &http.Server{
		Handler:           n.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelDebug),
	}

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	n.cancel = cancel
	n.goRun("http", func() error {
		if err := n.http.Serve(n.listener); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	n.goRun("connection", func() error { return n.conn.Run(runCtx) })
	n.goRun("application", func() error { return n.app.Run(runCtx) })
	n.goRun("keys", func() error { return n.rtsp.keys.Watch(runCtx) })
	if cfg.Demo {
		n.goRun("demo", func() error {
			err := demo.Run(runCtx, n.URL()+"/whip/"+DemoStream, n.secrets.PublishKey, n.log)
			if runCtx.Err() != nil {
				return nil
			}
			return err
		})
	}
	return n, nil
}

func withDefaults(cfg Config) Config {
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
	return cfg
}

func (n *Node) build(reg prometheus.Registerer) error {
	cfg := n.cfg
	var err error
	n.rtc, err = rtc.Listen(rtc.Config{
		ICEAddr:    cfg.ICEAddr,
		PublicIPs:  cfg.PublicIPs,
		ICEServers: cfg.ICEServers,
		Logger:     n.log,
	})
	if err != nil {
		return fmt.Errorf("ice: %w", err)
	}
	n.registry = media.NewRegistry(cfg.NodeID)
	if err := n.openKeys(); err != nil {
		return err
	}
	n.ingest, err = ingest.New(ingest.Config{
		Node:      cfg.NodeID,
		Registry:  n.registry,
		RTC:       n.rtc,
		Keys:      n.rtsp.keys,
		PublicURL: cfg.PublicURL,
		Logger:    n.log,
		Metrics:   reg,
	})
	if err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	n.edge, err = edge.New(edge.Config{
		ID:        cfg.NodeID,
		Registry:  n.registry,
		RTC:       n.rtc,
		PublicURL: cfg.PublicURL,
		Logger:    n.log,
		Metrics:   reg,
	})
	if err != nil {
		return fmt.Errorf("edge: %w", err)
	}
	b := bus.NewMemory()
	n.conn, err = connection.New(connection.Config{
		ID:             cfg.NodeID,
		Bus:            b,
		Identity:       identity.NewIssuer([]byte(n.secrets.IdentitySecret)),
		AllowedOrigins: cfg.AllowedOrigins,
		PublicURL:      cfg.PublicURL,
		Logger:         n.log,
		Metrics:        reg,
	})
	if err != nil {
		return fmt.Errorf("connection: %w", err)
	}
	n.app, err = application.New(application.Config{
		Bus:         b,
		Edges:       application.StaticEdge{ID: cfg.NodeID, BaseURL: cfg.PublicURL},
		OperatorKey: n.secrets.OperatorKey,
		Logger:      n.log,
		Metrics:     reg,
	})
	if err != nil {
		return fmt.Errorf("application: %w", err)
	}
	n.registry.Subscribe(n.app.StreamEvent)
	return n.startRTSP(reg)
}

func (n *Node) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/whip/", n.ingest.Handler())
	mux.Handle("/whep/", n.edge.Handler())
	mux.Handle("/ws", n.conn.Handler())
	mux.Handle("/connect", n.conn.ConnectHandler())
	n.app.Routes(mux)
	n.app.StreamKeyRoutes(mux, n.rtsp.keys, pullAPI{n.rtsp.puller})
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.metrics, promhttp.HandlerOpts{Registry: n.metrics}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"status":"ok","node":%q,"links":%d,"viewers":%d,"streams":%d}`+"\n",
			n.cfg.NodeID, n.conn.Links(), n.edge.Viewers(), len(n.registry.List()))
	})
	mux.Handle("/", player.Handler())
	return mux
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

// PublicBase is the base URL to print for people: the public URL when set.
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

// PublishKey is the development publish key accepted for every stream.
func (n *Node) PublishKey() string { return n.secrets.PublishKey }

// OperatorKey is the operator API key.
func (n *Node) OperatorKey() string { return n.secrets.OperatorKey }

// ICEAddr is the bound ICE UDP address.
func (n *Node) ICEAddr() *net.UDPAddr { return n.rtc.Addr() }

// Registry is the node's stream registry.
func (n *Node) Registry() *media.Registry { return n.registry }

// Err reports the first component failure.
func (n *Node) Err() <-chan error { return n.errc }

// Shutdown stops the node: control links are told to go away, media sessions
// end, listeners close. It waits for every component goroutine.
func (n *Node) Shutdown(ctx context.Context) error {
	var errs []error
	n.once.Do(func() {
		if err := n.conn.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("connection: %w", err))
		}
		n.cancel()
		if err := n.http.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("http: %w", err))
		}
		n.closeTiers()
		n.wg.Wait()
	})
	return errors.Join(errs...)
}

func (n *Node) closeTiers() {
	n.closeRTSP()
	if n.ingest != nil {
		n.ingest.Close()
	}
	if n.edge != nil {
		n.edge.Close()
	}
	if n.rtc != nil {
		n.rtc.Close()
	}
}
