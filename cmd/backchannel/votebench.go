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

// runVoteBench drives the vote path of a running node (see BENCHMARKS.md).
func runVoteBench(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("votebench", flag.ContinueOnError)
	var (
		url     = fs.String("url", "http://127.0.0.1:8080", "base URL of the node under test")
		key     = fs.String("api-key", "", "operator API key of the node")
		stream  = fs.String("stream", "bench", "stream the polls are for")
		polls   = fs.Int("polls", 10, "concurrent polls")
		voters  = fs.Int("voters", 15000, "voters, each on its own link and identity")
		choices = fs.Int("choices", 4, "choices per poll")
		every   = fs.Duration("vote-every", 60*time.Millisecond, "pause between one voter's votes")
		sources = fs.String("sources", "127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4", "local addresses to dial from")
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
		VoteEvery: *every, Sources: splitList(*sources),
		Log: func(format string, a ...any) { fmt.Fprintf(os.Stderr, format+"\n", a...) },
	})
	if err != nil {
		return err
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	enc.Encode(rep)
	if !rep.TalliesExact || rep.Acks != rep.VotesSent {
		return errors.New("tallies differ from what was sent, or votes were not acknowledged")
	}
	return nil
}
