package rtsp_test

import (
	"bufio"
	"crypto/rand"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/backchannel/backchannel/ingest/rtsp/wire"
	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/whipclient/whiptest"
)

// TestGarbageDoesNotDisturbPublish: while ffmpeg publishes, other
// connections send garbage, truncated requests, oversize headers and
// bodies, frames for channels nobody set up and requests for sessions that
// are not theirs. Each gets its status or is hung up on; the publish does
// not miss a beat.
func TestGarbageDoesNotDisturbPublish(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOptions{})
	pub := startFFmpeg(t, publishArgs(8, "tcp", n.rtspURL("x", "key="+whiptest.Key))...)
	n.waitLive(t, "x", 10*time.Second)
	video := attachSink(t, n, "x", media.KindVideo)
	audio := attachSink(t, n, "x", media.KindAudio)
	receivedBefore := counterValue(t, n.RTSPMetrics, "backchannel_rtsp_packets_received_total", "audio")
	countBefore := audio.count()
	waitFor(t, 5*time.Second, "media", func() bool { return video.count() > 20 && audio.count() > 20 })
	// The same measure without attacks, for comparison.
	video.resetGap()
	audio.resetGap()
	time.Sleep(1500 * time.Millisecond)
	baseV, baseA := video.gap(), audio.gap()
	video.resetGap()
	audio.resetGap()
	addr := n.RTSP.Addr().String()

	// exchange sends b and returns the status of the answer (0 if the
	// server hung up without one).
	exchange := func(b []byte) int {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Error(err)
			return -1
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(5 * time.Second))
		go func() { _, _ = nc.Write(b) }()
		resp, err := wire.ReadResponse(bufio.NewReader(nc), wire.Limits{})
		if err != nil {
			return 0
		}
		return resp.StatusCode
	}
	junk := make([]byte, 32<<10)
	_, _ = rand.Read(junk)
	junk[0] = 'G' // not '$': read as a request line

	cases := []struct {
		name string
		send []byte
		want []int // acceptable answers; 0 = hung up
	}{
		{"random bytes", junk, []int{400, 414, 0}},
		{"binary start line", []byte("\x00\x01\x02 \xff\xfe RTSP/1.0\r\n\r\n"), []int{400}},
		{"HTTP request", []byte("GET /x HTTP/1.1\r\nHost: h\r\n\r\n"), []int{400}},
		{"oversize URI", []byte("DESCRIBE rtsp://h/" + strings.Repeat("a", 10000) + " RTSP/1.0\r\nCSeq: 1\r\n\r\n"), []int{414}},
		{"oversize header line", []byte("OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nX: " + strings.Repeat("b", 10000) + "\r\n\r\n"), []int{400}},
		{"oversize headers", []byte("OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n" + strings.Repeat("X-Y: "+strings.Repeat("c", 1000)+"\r\n", 40) + "\r\n"), []int{400}},
		{"too many headers", []byte("OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n" + strings.Repeat("X: y\r\n", 500) + "\r\n"), []int{400}},
		{"oversize body", []byte("ANNOUNCE rtsp://h/x?key=" + whiptest.Key + " RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 100000000\r\n\r\n"), []int{413}},
		{"negative length", []byte("ANNOUNCE rtsp://h/x RTSP/1.0\r\nCSeq: 1\r\nContent-Length: -1\r\n\r\n"), []int{400}},
		{"wrong version", []byte("OPTIONS * RTSP/9.9\r\nCSeq: 1\r\n\r\n"), []int{505}},
		{"foreign session", []byte("TEARDOWN rtsp://h/x RTSP/1.0\r\nCSeq: 1\r\nSession: 0123456789abcdef\r\n\r\n"), []int{454}},
		{"ANNOUNCE over the live stream, wrong key", []byte("ANNOUNCE rtsp://h/x?key=bad RTSP/1.0\r\nCSeq: 1\r\nContent-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n"), []int{401}},
		{"frames to nowhere, then a request", append(append(wire.AppendFrameHeader(nil, 0, 3), 1, 2, 3), "OPTIONS * RTSP/1.0\r\nCSeq: 2\r\n\r\n"...), []int{200}},
	}
	var wg sync.WaitGroup
	stop := time.Now().Add(3 * time.Second)
	for _, c := range cases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for rounds := 0; time.Now().Before(stop) || rounds == 0; rounds++ {
				got := exchange(c.send)
				ok := false
				for _, w := range c.want {
					ok = ok || got == w
				}
				if !ok {
					t.Errorf("%s: answered %d, want one of %v", c.name, got, c.want)
					return
				}
				// Many clients at a realistic pace, not a CPU-bound loop
				// starving the encoder on the same two cores.
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	// Truncated requests and connections that open and drop at once.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for time.Now().Before(stop) {
			for _, s := range []string{"", "OPT", "DESCRIBE rtsp://h/x RTSP/1.0\r\nCSeq: 1\r\nContent-", "$\x00\x05\x00"} {
				nc, err := net.Dial("tcp", addr)
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.WriteString(nc, s)
				nc.Close()
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	wg.Wait()

	if err := pub.wait(t, 15*time.Second); err != nil {
		t.Fatalf("the publish failed: %v\n%s", err, pub.stderr.String())
	}
	received := counterValue(t, n.RTSPMetrics, "backchannel_rtsp_packets_received_total", "audio") - receivedBefore
	vg, ag := video.gap(), audio.gap()
	t.Logf("largest gap between packets: before the attack video %v, audio %v; under attack video %v, audio %v",
		baseV.Round(time.Millisecond), baseA.Round(time.Millisecond), vg.Round(time.Millisecond), ag.Round(time.Millisecond))
	// Frames are 40 ms apart and audio 20 ms; scheduling on a shared
	// two-core machine adds some; a stalled session would show seconds.
	if vg > time.Second || ag > time.Second {
		t.Fatalf("the publish stalled: gaps of %v (video) and %v (audio)", vg, ag)
	}
	// Nothing was lost either: every Opus packet the server received in
	// the meantime reached the sink (Opus passes through one for one).
	if got := float64(audio.count() - countBefore); got < received-1 || received < 100 {
		t.Fatalf("%v of %v received audio packets reached the sink", got, received)
	}
}
