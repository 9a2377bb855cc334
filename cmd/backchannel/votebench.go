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
	"syscall"
	"time"

	"github.com/backchannel/backchannel/internal/votebench"
)

const voteBenchUsage = `Usage:
  backchannel votebench [flags]   drive the vote path of a running node (see BENCHMARKS.md)
  backchannel votebench worker    a worker process (spawned by votebench)

Start the node under test first, for example
  backchannel all --http 127.0.0.1:8080 --api-key KEY
then
  backchannel votebench --url http://127.0.0.1:8080 --api-key KEY --voters 15000 --polls 67 --vote-every 142ms
`

// runVoteBench drives the vote path of a running node.
func runVoteBench(args []string, out io.Writer) error {
	if len(args) > 0 && args[0] == "worker" {
		return votebench.RunWorker(os.Stdin, out)
	}
	fs := flag.NewFlagSet("votebench", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), voteBenchUsage, "\nFlags:\n"); fs.PrintDefaults() }
	var (
		url       = fs.String("url", "http://127.0.0.1:8080", "base URL of the node under test")
		key       = fs.String("api-key", "", "operator API key of the node")
		stream    = fs.String("stream", "bench", "stream the polls are for")
		polls     = fs.Int("polls", 10, "concurrent polls; every voter votes in each")
		voters    = fs.Int("voters", 15000, "voters, each on its own link and identity")
		choices   = fs.Int("choices", 4, "choices per poll")
		every     = fs.Duration("vote-every", 60*time.Millisecond, "pause between one voter's votes")
		sources   = fs.String("sources", "127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4", "local addresses to dial from")
		workers   = fs.Int("workers", 2, "worker processes holding the links (0: inside this process)")
		serverPID = fs.Int("server-pid", 0, "the node's pid, for its CPU figures (default: the process listening on the URL's port)")
		ackWait   = fs.Duration("ack-wait", time.Minute, "how long to wait for acks after the last vote")
		seed      = fs.Uint64("seed", 0, "seed of choices, poll orders and phases (default random)")
		compete   = fs.Bool("compete", false, "keep the driver in the normal scheduling policy (default: SCHED_BATCH, so that its wake-ups do not preempt the server's threads, as clients on other machines would not)")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *key == "" {
		return errors.New("--api-key is required")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep, err := votebench.Run(ctx, votebench.Config{
		URL: *url, APIKey: *key, Stream: *stream, Polls: *polls, Voters: *voters, Choices: *choices,
		VoteEvery: *every, Sources: splitList(*sources), Workers: *workers, ServerPID: *serverPID,
		AckWait: *ackWait, Seed: *seed, Compete: *compete,
		Log: func(format string, a ...any) { fmt.Fprintf(os.Stderr, "votebench: "+format+"\n", a...) },
	})
	if rep != nil {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		enc.Encode(rep)
	}
	if err != nil {
		return err
	}
	if !rep.TalliesExact || rep.Acks != rep.VotesSent || rep.Errors > 0 {
		return errors.New("tallies differ from what was sent, or votes were not acknowledged")
	}
	return nil
}
