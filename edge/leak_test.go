package edge_test

import (
	"runtime"
	"strings"
	"testing"
	"time"

	pionmedia "github.com/pion/webrtc/v4/pkg/media"

	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/whipclient/whiptest"
)

// Closing the servers, the transport and the clients stops every goroutine
// they started.
func TestCloseStopsEverything(t *testing.T) {
	time.Sleep(100 * time.Millisecond) // let earlier tests' stragglers finish
	before := runtime.NumGoroutine()
	t.Run("session", func(t *testing.T) {
		srv := whiptest.Start(t, whiptest.Options{})
		pub := publish(t, srv, "leak")
		p1 := play(t, srv, "leak")
		play(t, srv, "leak")
		srv.WaitSinks(t, "leak", media.KindVideo, 2)
		for _, f := range whiptest.H264Frames(10, 30, 5) {
			_ = pub.WriteVideo(pionmedia.Sample{Data: f, Duration: time.Second / 30})
			_ = pub.WriteAudio(pionmedia.Sample{Data: []byte{0xfc, 1, 2}, Duration: 20 * time.Millisecond})
		}
		_ = p1.Close() // one viewer leaves by itself, the rest at cleanup
	})
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
