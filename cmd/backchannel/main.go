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
	"strings"
	"syscall"
	"time"

	"github.com/backchannel/backchannel/internal/node"
)

const usage = `Backchannel: live broadcasts with a control channel beside the video.

Usage:
  backchannel all [flags]     run every tier in one process (the embedded default)
  backchannel loadgen [flags] load-test a running server's control links against a raw baseline
  backchannel version         print the version

The cluster roles (ingest, edge, connection, application) run as separate
processes once the Redis bus lands; today every deployment is "all".

Run "backchannel all -h" for the flags. Every flag can also be set through
the environment: --public-url is BACKCHANNEL_PUBLIC_URL, and so on.
`

var version = "dev"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	switch os.Args[1] {
	case "all":
		if err := runAll(os.Args[2:], os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "backchannel:", err)
			os.Exit(1)
		}
	case "loadgen":
		if err := runLoadgen(os.Args[2:], os.Stdout, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, "backchannel:", err)
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

func runAll(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("all", flag.ContinueOnError)
	var (
		httpAddr   = fs.String("http", ":8080", "HTTP listen address for every route")
		iceAddr    = fs.String("ice-udp", ":8189", "ICE UDP mux address; ICE-TCP listens on the same port")
		publicIP   = fs.String("public-ip", "", "comma-separated public IPs announced as ICE candidates (1:1 NAT)")
		publicURL  = fs.String("public-url", "", "base of every URL handed out (e.g. https://live.example.com); default relative URLs")
		iceServers = fs.String("ice-servers", "", "comma-separated STUN/TURN URLs for clients, credentials as turn:user:pass@host:port")
		dataDir    = fs.String("data-dir", "./data", "directory for durable state (keys, identities)")
		publishKey = fs.String("publish-key", "", "development stream key accepted for every stream (generated when empty)")
		apiKey     = fs.String("api-key", "", "operator API key (generated when empty)")
		origins    = fs.String("allowed-origins", "", "comma-separated Origin host patterns allowed on /ws (default: same host)")
		demoFlag   = fs.Bool("demo", false, "publish the built-in demo clip as stream \"demo\"")
		nodeID     = fs.String("node-id", "", "this node's id (default: host name)")
		logLevel   = fs.String("log-level", "info", "debug, info, warn or error")
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
		HTTPAddr:       *httpAddr,
		ICEAddr:        *iceAddr,
		PublicIPs:      splitList(*publicIP),
		PublicURL:      *publicURL,
		ICEServers:     ice,
		DataDir:        *dataDir,
		PublishKey:     *publishKey,
		OperatorKey:    *apiKey,
		AllowedOrigins: splitList(*origins),
		Demo:           *demoFlag,
		NodeID:         id,
		Logger:         logger,
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
	fmt.Fprintf(out, "\nBackchannel is running.\n\n")
	if demo {
		fmt.Fprintf(out, "  Watch the demo:   %s/watch/%s\n", base, node.DemoStream)
	}
	fmt.Fprintf(out, "  Watch a stream:   %s/watch/<stream>\n", base)
	fmt.Fprintf(out, "  Studio:           %s/studio\n", base)
	fmt.Fprintf(out, "  Operator console: %s/ops\n", base)
	fmt.Fprintf(out, "  WHIP ingest:      %s/whip/<stream>   (Authorization: Bearer <publish key>)\n", base)
	fmt.Fprintf(out, "  WHEP playback:    %s/whep/<stream>\n", base)
	fmt.Fprintf(out, "  REST API:         %s/api/v1/        (Authorization: Bearer <operator key>)\n", base)
	fmt.Fprintf(out, "  ICE (WebRTC):     udp+tcp %s\n\n", n.ICEAddr())
	fmt.Fprintf(out, "  Publish key:      %s\n", n.PublishKey())
	fmt.Fprintf(out, "  Operator key:     %s\n\n", n.OperatorKey())
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
