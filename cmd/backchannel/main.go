// Command backchannel is the Backchannel server. Each tier is a role chosen by
// subcommand; `backchannel all` runs every tier in one process.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/backchannel/backchannel/application"
	"github.com/backchannel/backchannel/connection"
	"github.com/backchannel/backchannel/internal/cluster"
	"github.com/backchannel/backchannel/internal/node"
)

const usage = `Backchannel: live broadcasts with a control channel beside the video.

Usage:
  backchannel all [flags]           every tier in one process (the embedded default)
  backchannel connection [flags]    a connection server: viewers' control links
  backchannel application [flags]   an application server: groups, telemetry, REST API
  backchannel ingest [flags]        an ingest node: WHIP and RTSP publishing; it also
                                    serves WHEP and HLS, and is the origin edges pull from
  backchannel edge [flags]          an edge: WHEP and LL-HLS for viewers, every stream
                                    pulled from its origin on demand (in a cluster, or
                                    from --origin)
  backchannel loadgen [flags]       load-test a server's control links against a raw baseline
  backchannel votebench [flags]     load-test live polls: many voters, many polls
  backchannel version               print the version

Cluster roles need Redis (--redis host:port) for the bus and shared state,
and join each other by gossip (--cluster-bind, --cluster-join).

Run "backchannel <role> -h" for the flags. Every flag can also be set through
the environment: --public-url is BACKCHANNEL_PUBLIC_URL, and so on.
`

var version = "dev"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	switch cmd := os.Args[1]; cmd {
	case "all", "connection", "application", "ingest", "edge":
		if err := runNode(cmd, os.Args[2:], os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "backchannel:", err)
			os.Exit(1)
		}
	case "votebench":
		if err := runVoteBench(os.Args[2:], os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "backchannel votebench:", err)
			os.Exit(1)
		}
	case "loadgen":
		if err := runLoadgen(os.Args[2:], os.Stdout, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, "backchannel loadgen:", err)
			os.Exit(1)
		}
	case "version", "--version", "-version":
		fmt.Println("backchannel", version)
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "backchannel: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
}

// roleSets maps subcommands to the roles their process plays.
var roleSets = map[string][]cluster.Role{
	"all":         node.AllRoles,
	"connection":  {node.RoleConnection},
	"application": {node.RoleApplication},
	"ingest":      {node.RoleIngest, node.RoleEdge},
	"edge":        {node.RoleEdge},
}

func runNode(cmd string, args []string, out io.Writer) error {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	var (
		httpAddr   = fs.String("http", ":8080", "HTTP listen address for every route")
		iceAddr    = fs.String("ice-udp", ":8189", "ICE UDP mux address; ICE-TCP listens on the same port")
		rtspAddr   = fs.String("rtsp", ":8554", "RTSP listen address (publish with ANNOUNCE/RECORD, read with DESCRIBE/PLAY)")
		publicIP   = fs.String("public-ip", "", "comma-separated public IPs announced as ICE candidates (1:1 NAT)")
		publicURL  = fs.String("public-url", "", "base of every URL handed out (e.g. https://live.example.com); default relative URLs")
		iceServers = fs.String("ice-servers", "", "comma-separated STUN/TURN URLs for clients, credentials as turn:user:pass@host:port")
		dataDir    = fs.String("data-dir", "./data", "directory for durable state (keys, identities)")
		publishKey = fs.String("publish-key", "", "development stream key accepted for every stream (generated when empty)")
		apiKey     = fs.String("api-key", "", "operator API key (generated when empty)")
		origins    = fs.String("allowed-origins", "", "comma-separated Origin host patterns allowed on /ws (default: same host)")
		pprofFlag  = fs.Bool("pprof", false, "serve Go's profiler at /debug/pprof/ (operator key required)")
		wsTransp   = fs.String("ws-transport", "epoll", "control-link transport: epoll (no goroutine per idle link) or coder (coder/websocket)")
		ioURing    = fs.Bool("io-uring", true, "epoll transport: batch socket reads and writes with io_uring where the kernel allows it (false: one system call each)")
		replyDelay = fs.Duration("reply-delay", connection.DefaultReplyDelay, fmt.Sprintf("connection: longest a vote's ack waits for another frame to the same link, to share its write (at most %v)", connection.MaxReplyDelay))
		audience   = fs.Duration("audience-interval", application.DefaultAudienceInterval, fmt.Sprintf("application: least time between two poll results messages to one group (at least %v)", application.MinAudienceInterval))
		demoFlag   = fs.Bool("demo", false, "publish the built-in demo clip as stream \"demo\"")
		nodeID     = fs.String("node-id", "", "this node's id (default: host name)")
		logLevel   = fs.String("log-level", "info", "debug, info, warn or error")
		identity   = fs.String("identity-secret", "", "secret signing viewer identities (generated when empty; shared through Redis in a cluster)")

		redisAddr   = fs.String("redis", "", "Redis host:port for the bus and shared state (required for every role but all)")
		gossipBind  = fs.String("cluster-bind", "", "memberlist gossip address host:port (e.g. 0.0.0.0:7946); empty: no gossip")
		gossipAdv   = fs.String("cluster-advertise", "", "gossip host:port other nodes reach this one at (default: the bound one)")
		gossipSeeds = fs.String("cluster-join", "", "comma-separated gossip addresses of nodes to join")
		region      = fs.String("region", "", "region label this node announces")
		lat         = fs.Float64("lat", 0, "latitude this node announces (edge choice by distance)")
		lon         = fs.Float64("lon", 0, "longitude this node announces")
		capacity    = fs.Int("capacity", 0, "control links this node accepts (connection role; 0: 100000)")
		geoCity     = fs.String("geoip-city", "", "GeoIP2/GeoLite2 City mmdb file (application role); without it geography is unknown")
		geoASN      = fs.String("geoip-asn", "", "GeoIP2/GeoLite2 ASN mmdb file (application role)")

		origin      = fs.String("origin", "", "edge: pull every stream from this base URL (a parent edge or an ingest node) instead of finding origins in the cluster; an edge with --origin needs no Redis")
		relayLinger = fs.Duration("relay-linger", 10*time.Second, "edge: how long a pulled stream is kept after its last viewer left")
		pionSRTP    = fs.Bool("whep-pion-srtp", false, "edge: send WHEP media through pion's SRTP session, one write per packet per viewer, instead of per-viewer SRTP contexts and batched sends (a fallback)")
		maxViewers  = fs.Int("max-viewers", 0, "edge: WHEP viewers accepted (0: no cap); a full edge redirects new viewers to a sibling with room (307) or answers 503")
	)
	if err := parseWithEnv(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	logger, err := newLogger(*logLevel)
	if err != nil {
		return err
	}
	slog.SetDefault(logger)
	ice, err := parseICEServers(*iceServers)
	if err != nil {
		return err
	}
	id := *nodeID
	if id == "" {
		id, _ = os.Hostname()
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	n, err := node.Start(ctx, node.Config{
		Roles:            roleSets[cmd],
		HTTPAddr:         *httpAddr,
		ICEAddr:          *iceAddr,
		RTSPAddr:         *rtspAddr,
		PublicIPs:        splitList(*publicIP),
		PublicURL:        *publicURL,
		ICEServers:       ice,
		DataDir:          *dataDir,
		PublishKey:       *publishKey,
		OperatorKey:      *apiKey,
		AllowedOrigins:   splitList(*origins),
		WSTransport:      *wsTransp,
		NoIOUring:        !*ioURing,
		ReplyDelay:       *replyDelay,
		AudienceInterval: *audience,
		Pprof:            *pprofFlag,
		Demo:             *demoFlag,
		NodeID:           id,
		Logger:           logger,
		IdentitySecret:   *identity,

		RedisAddr:        *redisAddr,
		ClusterBind:      *gossipBind,
		ClusterAdvertise: *gossipAdv,
		ClusterSeeds:     splitList(*gossipSeeds),
		Region:           *region,
		Lat:              *lat,
		Lon:              *lon,
		Capacity:         *capacity,
		GeoIPCity:        *geoCity,
		GeoIPASN:         *geoASN,

		Origin:       *origin,
		RelayLinger:  *relayLinger,
		MaxViewers:   *maxViewers,
		WHEPPionSRTP: *pionSRTP,
	})
	if err != nil {
		return err
	}
	printBanner(out, n, *demoFlag)

	var runErr error
	select {
	case <-ctx.Done():
		logger.Info("shutting down", "reason", "signal")
	case runErr = <-n.Err():
	}
	stop()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := n.Shutdown(shutdownCtx); err != nil {
		logger.Warn("shutdown", "err", err)
	}
	return runErr
}

func printBanner(out io.Writer, n *node.Node, demo bool) {
	base := n.PublicBase()
	has := func(r cluster.Role) bool { return slices.Contains(n.Roles(), r) }
	line := func(label, format string, args ...any) {
		fmt.Fprintf(out, "  %-18s"+format+"\n", append([]any{label + ":"}, args...)...)
	}
	fmt.Fprintf(out, "\nBackchannel %s is running (node %s).\n\n", roleNames(n.Roles()), n.ID())
	if demo && has(node.RoleIngest) {
		line("Watch the demo", "%s/watch/%s", base, node.DemoStream)
	}
	line("Watch a stream", "%s/watch/<stream>", base)
	line("Studio", "%s/studio", base)
	line("Operator console", "%s/ops", base)
	if has(node.RoleIngest) {
		line("WHIP ingest", "%s/whip/<stream>   (Authorization: Bearer <publish key>)", base)
	}
	if has(node.RoleEdge) {
		line("WHEP playback", "%s/whep/<stream>", base)
		line("LL-HLS playback", "%s/hls/<stream>/index.m3u8", base)
	}
	if has(node.RoleIngest) {
		line("RTSP", "%s/<stream>?key=<publish key>   (publish; read without ?key)", n.RTSPBase())
	}
	if has(node.RoleConnection) {
		line("Control links", "%s/ws   (find a server: %s/connect)", base, base)
	}
	if has(node.RoleApplication) {
		line("REST API", "%s/api/v1/   (Authorization: Bearer <operator key>)", base)
	}
	if a := n.ICEAddr(); a != nil {
		line("ICE (WebRTC)", "udp+tcp %s", a)
	}
	if g := n.GossipAddr(); g != "" {
		line("Cluster gossip", "%s", g)
	}
	fmt.Fprintln(out)
	if has(node.RoleIngest) {
		line("Publish key", "%s", n.PublishKey())
	}
	if has(node.RoleApplication) {
		line("Operator key", "%s", n.OperatorKey())
	}
	fmt.Fprintln(out)
}

func roleNames(roles []cluster.Role) string {
	if len(roles) == len(node.AllRoles) {
		return "(all roles)"
	}
	names := make([]string, len(roles))
	for i, r := range roles {
		names[i] = string(r)
	}
	return "(" + strings.Join(names, ", ") + ")"
}

// parseWithEnv lets BACKCHANNEL_<FLAG> set any flag; the command line wins.
func parseWithEnv(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		env := "BACKCHANNEL_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s: %w", env, e)
			}
		}
	})
	return err
}

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
