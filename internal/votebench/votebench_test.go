package votebench_test

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/backchannel/backchannel/internal/node"
	"github.com/backchannel/backchannel/internal/votebench"
)

// TestSmallRun: the driver against a real node: every vote acked, tallies
// exact, latencies measured.
func TestSmallRun(t *testing.T) {
	n, err := node.Start(context.Background(), node.Config{
		HTTPAddr: "127.0.0.1:0", ICEAddr: "127.0.0.1:0", DataDir: t.TempDir(), NodeID: "vb",
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		n.Shutdown(ctx)
	}()
	rep, err := votebench.Run(context.Background(), votebench.Config{URL: n.URL(), APIKey: n.OperatorKey(), Polls: 4, Voters: 300, VoteEvery: 10 * time.Millisecond, Log: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", rep)
	if rep.VotesSent != 1200 || rep.Acks != 1200 || rep.Errors != 0 || !rep.TalliesExact || rep.LatencySamples != 1200 {
		t.Fatalf("%+v", rep)
	}
}
