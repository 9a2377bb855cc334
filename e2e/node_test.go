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

// TestStreamsAPIShowsMeasuredTracks: the registry's measured figures (bitrate,
// frame rate) and the SPS's size reach GET /api/v1/streams, not only what
// was known when the stream went on air.
func TestStreamsAPIShowsMeasuredTracks(t *testing.T) {
	n := startNode(t, true)
	waitLive(t, n, "demo", 15*time.Second)
	type track struct {
		Kind        string  `json:"kind"`
		Codec       string  `json:"codec"`
		Width       int     `json:"width"`
		Height      int     `json:"height"`
		FPS         float64 `json:"fps"`
		BitrateKbps float64 `json:"bitrate_kbps"`
	}
	var s struct {
		State     string  `json:"state"`
		Protocol  string  `json:"protocol"`
		Publisher string  `json:"publisher"`
		Node      string  `json:"node"`
		Tracks    []track `json:"tracks"`
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if code := apiGet(t, n, "/streams/demo", &s); code != 200 {
			t.Fatalf("GET /streams/demo: %d", code)
		}
		measured := len(s.Tracks) == 2
		for _, tr := range s.Tracks {
			measured = measured && tr.BitrateKbps > 0
		}
		if measured || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if s.State != "live" || s.Protocol != "whip" || s.Publisher == "" || s.Node != "e2e" {
		t.Fatalf("stream %+v", s)
	}
	for _, tr := range s.Tracks {
		if tr.BitrateKbps <= 0 {
			t.Errorf("%s track has no measured bitrate: %+v", tr.Kind, tr)
		}
		if tr.Kind == "video" && (tr.Width != 640 || tr.Height != 360 || tr.FPS < 25 || tr.FPS > 35) {
			t.Errorf("video track %+v, want the demo clip's 640x360 at ~30 fps", tr)
		}
	}
}
