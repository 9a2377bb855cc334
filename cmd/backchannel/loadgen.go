package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/backchannel/backchannel/internal/loadgen"
)

const loadgenUsage = `Usage:
  backchannel loadgen [flags]            measure a running server against a raw baseline
  backchannel loadgen raw-server [flags] the raw baseline server alone
  backchannel loadgen worker             a worker process (spawned by loadgen)

Start the server under test first, for example
  backchannel all --demo --http 127.0.0.1:8080 --api-key KEY
then
  backchannel loadgen -target http://127.0.0.1:8080 -key KEY -links 15000
`

func runLoadgen(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "worker":
			return loadgen.RunWorker(os.Stdin, stdout)
		case "raw-server":
			fs := flag.NewFlagSet("loadgen raw-server", flag.ContinueOnError)
			addr := fs.String("addr", "127.0.0.1:0", "listen address")
			shards := fs.Int("shards", 0, "writer goroutines per trigger (default GOMAXPROCS)")
			if err := fs.Parse(args[1:]); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return loadgen.ServeRaw(ctx, *addr, *shards, stdout)
		}
	}
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), loadgenUsage, "\nFlags:\n"); fs.PrintDefaults() }
	var (
		o       loadgen.Options
		asJSON  = fs.Bool("json", false, "print the result as JSON")
		timeout = fs.Duration("timeout", 20*time.Minute, "give up after this long")
	)
	fs.StringVar(&o.Target, "target", "http://127.0.0.1:8080", "base URL of the server under test")
	fs.StringVar(&o.APIKey, "key", os.Getenv("BACKCHANNEL_API_KEY"), "its operator API key (default $BACKCHANNEL_API_KEY)")
	fs.IntVar(&o.ServerPID, "server-pid", 0, "the server's pid (default: the process listening on the target's port)")
	fs.IntVar(&o.Links, "links", 15000, "links to each server")
	extra := fs.String("extra-pids", "", "comma-separated pids of the system's other processes (a cluster's other servers), summed into its CPU and RSS")
	fs.BoolVar(&o.Connect, "connect", false, "every link asks the target's /connect for its server (a cluster), instead of dialling the target's /ws")
	fs.IntVar(&o.Workers, "workers", 0, "worker processes (default: ≤ 9000 links per server per worker, at least 2)")
	fs.IntVar(&o.Rounds, "rounds", 20, "fan-out rounds per server")
	fs.DurationVar(&o.Gap, "gap", 300*time.Millisecond, "pause between rounds")
	fs.DurationVar(&o.Idle, "idle", 5*time.Second, "idle time before sampling RSS")
	fs.StringVar(&o.Stream, "stream", "demo", "stream the links watch; notices go to stream:<name>")
	fs.IntVar(&o.TextBytes, "text", 100, "notice text length in bytes")
	fs.BoolVar(&o.NoRaw, "no-raw", false, "skip the raw baseline")
	fs.IntVar(&o.RawShards, "raw-shards", 0, "writer goroutines of the raw baseline (default GOMAXPROCS)")
	fs.BoolVar(&o.Compete, "compete", false, "keep the load generator in the normal scheduling policy (default: SCHED_BATCH, so that its wake-ups do not preempt the servers' threads, as clients on other machines would not)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if o.APIKey == "" {
		return errors.New("loadgen: -key (the server's operator API key) is required")
	}
	for _, f := range splitList(*extra) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return fmt.Errorf("loadgen: -extra-pids: %q is not a pid", f)
		}
		o.ExtraPIDs = append(o.ExtraPIDs, pid)
	}
	o.Log = stderr
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	res, err := loadgen.Run(ctx, o)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	res.Print(stdout)
	return nil
}
