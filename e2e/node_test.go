package e2e

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/pion/webrtc/v4/pkg/media"

	"github.com/backchannel/backchannel/internal/node"
)

// startNode runs a whole embedded deployment on loopback ports chosen by the
// OS, shut down when the test ends.
func startNode(t *testing.T, demo bool) *node.Node {
	t.Helper()
	level := slog.LevelWarn
	if os.Getenv("E2E_DEBUG") != "" {
		level = slog.LevelDebug
	}
	n, err := node.Start(context.Background(), node.Config{
		HTTPAddr: "127.0.0.1:0",
		ICEAddr:  "127.0.0.1:0",
		DataDir:  t.TempDir(),
		Demo:     demo,
		NodeID:   "e2e",
		Logger:   slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
	})
	if err != nil {
		t.Fatalf("start node: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return n
}

// apiGet reads an operator API route into v.
func apiGet(t *testing.T, n *node.Node, path string, v any) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, n.URL()+"/api/v1"+path, nil)
	req.Header.Set("Authorization", "Bearer "+n.OperatorKey())
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode == http.StatusOK && v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("GET %s: %v in %s", path, err, body)
		}
	}
	return res.StatusCode
}

// waitLive waits until the registry lists the stream.
func waitLive(t *testing.T, n *node.Node, stream string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if _, ok := n.Registry().Lookup(stream); ok {
			for _, s := range n.Registry().List() {
				if s.Name == stream {
					return
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("stream %q not live after %v", stream, timeout)
}

func sampleOf(frame []byte) media.Sample {
	return media.Sample{Data: frame, Duration: time.Second / 30}
}
