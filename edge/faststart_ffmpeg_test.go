package edge_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/backchannel/backchannel/ingest"
	"github.com/backchannel/backchannel/ingest/rtsp"
	"github.com/backchannel/backchannel/internal/codec/h264"
	"github.com/backchannel/backchannel/internal/whipclient"
	"github.com/backchannel/backchannel/internal/whipclient/whiptest"
)

// firstFrameViewer is a WHEP player that notes when it could first show a
// picture: the first complete access unit holding an IDR, with the SPS
// and PPS before it.
type firstFrameViewer struct {
	posted time.Time

	mu      sync.Mutex
	depack  h264.Depacketizer
	aus     [][][]byte
	pts     []int64
	params  bool
	first   time.Time
	packets int
}

func (v *firstFrameViewer) onRTP(tr *webrtc.TrackRemote, p *rtp.Packet) {
	if tr.Kind() != webrtc.RTPCodecTypeVideo {
		return
	}
	now := time.Now()
	v.mu.Lock()
	defer v.mu.Unlock()
	v.packets++
	cp := &rtp.Packet{Header: p.Header, Payload: append([]byte(nil), p.Payload...)}
	aus, _ := v.depack.Push(cp)
	for _, au := range aus {
		var nalus [][]byte
		for _, n := range au.NALUs {
			nalus = append(nalus, append([]byte(nil), n...))
			if t := h264.TypeOf(n); t == h264.NALUTypeSPS || t == h264.NALUTypePPS {
				v.params = true
			}
		}
		if v.first.IsZero() {
			if !h264.IsKeyframe(nalus) || !v.params {
				continue // undecodable without its keyframe
			}
			v.first = now
		}
		v.aus = append(v.aus, nalus)
		v.pts = append(v.pts, au.PTS)
	}
}

func (v *firstFrameViewer) firstFrame() (time.Duration, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.first.IsZero() {
		return 0, false
	}
	return v.first.Sub(v.posted), true
}

// Fast start, as the issue asks for it: ffmpeg publishes over RTSP with
// libx264 at a keyframe interval of 250 frames (10 s at 25 fps; RTSP
// publishers ignore keyframe requests), and ten Go WHEP viewers join at
// random moments inside that GOP. Each one must get a decodable first
// frame (from the edge's GOP cache) promptly, and what each received must
// decode. The bound checked here is loose (a shared CI machine); the
// measured figures are logged and kept in BENCHMARKS.md.
func TestFastStartFFmpegKeyint250(t *testing.T) {
	ffmpeg, srv, done, waitErr, stderr, live := startKeyint250(t)
	// Ten join moments, spread at random over the GOP's first 8 s (the
	// first keyframe is the only one: keyint 250 is 10 s).
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 250))
	joins := make([]time.Duration, 10)
	for i := range joins {
		joins[i] = 500*time.Millisecond + time.Duration(r.Int64N(int64(7500*time.Millisecond)))
	}
	slices.Sort(joins)
	viewers := make([]*firstFrameViewer, len(joins))
	errs := make(chan error, len(joins))
	var wg sync.WaitGroup
	for i, at := range joins {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Until(live.Add(at)))
			v := &firstFrameViewer{posted: time.Now()}
			viewers[i] = v
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			p, err := whipclient.Play(ctx, srv.WHEP("ff"), whipclient.OnRTP(v.onRTP))
			if err != nil {
				errs <- fmt.Errorf("viewer %d: %w", i, err)
				return
			}
			t.Cleanup(func() { _ = p.Close() })
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, v := range viewers {
		for {
			if _, ok := v.firstFrame(); ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("a viewer that joined %v in never got a decodable frame", v.posted.Sub(live).Round(time.Millisecond))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	select {
	case <-done:
		if *waitErr != nil {
			t.Fatalf("ffmpeg: %v\n%s", *waitErr, stderr.String())
		}
	case <-time.After(keyint250Seconds*time.Second + 10*time.Second):
		t.Fatal("ffmpeg did not finish")
	}
	time.Sleep(200 * time.Millisecond)

	var firsts []time.Duration
	for i, v := range viewers {
		d, _ := v.firstFrame()
		firsts = append(firsts, d)
		v.mu.Lock()
		aus, pts, lost := slices.Clone(v.aus), slices.Clone(v.pts), v.depack.Stats().PacketsLost
		v.mu.Unlock()
		t.Logf("viewer %d joined at %5v: first frame after %v, %d frames", i, joins[i].Round(time.Millisecond), d.Round(time.Millisecond), len(aus))
		// Timestamps only go forward, catch-up included.
		for k := 1; k < len(pts); k++ {
			if pts[k] <= pts[k-1] {
				t.Fatalf("viewer %d: timestamp of frame %d does not increase (%d after %d)", i, k, pts[k], pts[k-1])
			}
		}
		// A loaded machine loses a packet now and then (the race
		// detector's slow in-process viewers many more); the depacketizer
		// drops that frame and the decoder may skip a few after it. Nearly
		// all must decode, the first one (the cached keyframe) included.
		need := len(aus) * 9 / 10
		if raceEnabled {
			need = len(aus) / 2
		}
		if decoded := decodeAnnexB(t, ffmpeg, aus, lost); decoded < need || decoded < 25 {
			t.Fatalf("viewer %d: decoded %d of %d frames", i, decoded, len(aus))
		}
		if decoded := decodeAnnexB(t, ffmpeg, aus[:1], 0); decoded != 1 {
			t.Fatalf("viewer %d: its first frame does not decode on its own", i)
		}
	}
	slices.Sort(firsts)
	t.Logf("time to first frame over 10 viewers: median %v, max %v", firsts[len(firsts)/2].Round(time.Millisecond), firsts[len(firsts)-1].Round(time.Millisecond))
	if n := metricValue(t, srv.EdgeMetrics, "backchannel_whep_fast_starts_total"); n != float64(len(joins)) {
		t.Fatalf("%v of %d viewers started from the GOP cache", n, len(joins))
	}
	// 1 s is the target (BENCHMARKS.md); a loaded two-core machine gets
	// slack here, a viewer waiting for the next keyframe (10 s) does not.
	if worst := firsts[len(firsts)-1]; worst > 3*time.Second {
		t.Fatalf("slowest first frame %v", worst)
	}
}

const keyint250Seconds = 12

// startKeyint250 starts a WHIP/WHEP server with an RTSP ingest and ffmpeg
// publishing "ff" to it with libx264 at keyint 250 for keyint250Seconds;
// it returns once the stream is live.
func startKeyint250(t *testing.T) (ffmpeg string, srv *whiptest.Server, done chan struct{}, waitErr *error, stderr *strings.Builder, live time.Time) {
	ffmpeg, err := exec.LookPath("ffmpeg")
	if err != nil {
		t.Fatal("ffmpeg not found: run `make test`, which installs it (apt-get install ffmpeg)")
	}
	srv = whiptest.Start(t, whiptest.Options{})
	rs, err := rtsp.Listen(rtsp.Config{Addr: "127.0.0.1:0", UDPAddr: "off", Node: "test", Registry: srv.Registry,
		Keys: ingest.MasterKey(whiptest.Key), Logger: whiptest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rs.Close() })

	cmd := exec.Command(ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error",
		"-re", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25", "-t", fmt.Sprint(keyint250Seconds),
		"-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "250", "-pix_fmt", "yuv420p",
		"-f", "rtsp", "-rtsp_transport", "tcp", "rtsp://"+rs.Addr().String()+"/ff?key="+whiptest.Key)
	stderr = &strings.Builder{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done = make(chan struct{})
	waitErr = new(error)
	go func() { *waitErr = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	srv.WaitLive(t, "ff")
	return ffmpeg, srv, done, waitErr, stderr, time.Now()
}

// decodeAnnexB has ffprobe decode a viewer's access units and returns the
// frames decoded. A decoder complaint fails the test unless the viewer
// lost packets for good (lost > 0): the gap is then what it is about.
func decodeAnnexB(t *testing.T, ffmpeg string, aus [][][]byte, lost uint64) int {
	t.Helper()
	frames, _, _, complaints := whiptest.DecodeH264(t, strings.TrimSuffix(ffmpeg, "ffmpeg")+"ffprobe", aus)
	if complaints != "" {
		if lost == 0 {
			t.Fatalf("decoder complained with no packet lost:\n%s", complaints)
		}
		t.Logf("decoder remarks after %d packets lost:\n%s", lost, complaints)
	}
	return frames
}
