package hls_test

import (
	"context"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/backchannel/backchannel/edge/hls"
	"github.com/backchannel/backchannel/internal/cmaf/cmaftest"
)

// TestCloseStopsEverything: closing the server stops its janitor, every
// packager's goroutine, and releases blocked requests.
func TestCloseStopsEverything(t *testing.T) {
	time.Sleep(100 * time.Millisecond)
	before := runtime.NumGoroutine()
	t.Run("server", func(t *testing.T) {
		h := start(t, cmaftest.DemoClip(t, 1), hls.Config{})
		if r := h.get(t, "/hls/live/media.m3u8"); r.status != 200 {
			t.Fatalf("%d", r.status)
		}
		// A blocking request the client gives up on.
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", h.http.URL+"/hls/live/media.m3u8?_HLS_msn=3", nil)
		if res, err := http.DefaultClient.Do(req); err == nil {
			res.Body.Close()
		}
	})
	http.DefaultClient.CloseIdleConnections()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		var ours []string
		for _, g := range strings.Split(stacks, "\n\n") {
			if !strings.Contains(g, "testing.") {
				ours = append(ours, g)
			}
		}
		t.Fatalf("%d goroutines before, %d after:\n%s", before, n, strings.Join(ours, "\n\n"))
	}
}
