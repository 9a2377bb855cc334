package votebench_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
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
	if rep.DriverYields {
		t.Fatal("the driver yielded to a server in its own process")
	}
	bySecond := 0
	for _, d := range rep.LatencyBySecond {
		bySecond += d.N
	}
	if len(rep.LatencyBySecond) == 0 || bySecond != rep.LatencySamples {
		t.Fatalf("live results by second hold %d samples in %d seconds, want all %d", bySecond, len(rep.LatencyBySecond), rep.LatencySamples)
	}
	// Every live event carries the server's stamp, and is read after it
	// (the stamp is whole milliseconds, rounded down).
	if lag := rep.LiveReadLag; lag.N != rep.LiveEvents || lag.N == 0 || lag.P50 < 0 {
		t.Fatalf("read lag %+v over %d live events", lag, rep.LiveEvents)
	}
	// What explains a lagging run: the node's goroutine scheduling delays.
	resp, err := http.Get(n.URL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), "go_sched_latencies_seconds_bucket") {
		t.Fatal("the node's metrics have no go_sched_latencies_seconds")
	}
}
