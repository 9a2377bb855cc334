package rtsp_test

import (
	"bytes"
	"context"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/backchannel/backchannel/ingest"
	"github.com/backchannel/backchannel/ingest/rtsp"
	"github.com/backchannel/backchannel/internal/codec/h264"
	"github.com/backchannel/backchannel/internal/codec/opus"
	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/whipclient"
	"github.com/backchannel/backchannel/internal/whipclient/whiptest"
)

// node is a WHIP ingest, a WHEP edge and an RTSP server on one registry.
type node struct {
	*whiptest.Server
	RTSP        *rtsp.Server
	RTSPMetrics *prometheus.Registry
}

type nodeOptions struct {
	keys  ingest.KeyChecker // default: the master key whiptest.Key
	rtsp  rtsp.Config       // Registry, Keys, Addr, Metrics filled in
	grace time.Duration
	addr  string
}

func startNode(t testing.TB, o nodeOptions) *node {
	t.Helper()
	w := whiptest.Start(t, whiptest.Options{OfflineGrace: o.grace})
	n := &node{Server: w, RTSPMetrics: prometheus.NewRegistry()}
	cfg := o.rtsp
	cfg.Registry = w.Registry
	cfg.Keys = o.keys
	if cfg.Keys == nil {
		cfg.Keys = ingest.MasterKey(whiptest.Key)
	}
	cfg.Addr = o.addr
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	cfg.Node = "test"
	cfg.Logger = whiptest.Logger()
	cfg.Metrics = n.RTSPMetrics
	var err error
	n.RTSP, err = rtsp.Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.RTSP.Close() })
	return n
}

// rtspURL is the RTSP URL of a stream, with an optional query.
func (n *node) rtspURL(stream, query string) string {
	u := "rtsp://" + n.RTSP.Addr().String() + "/" + stream
	if query != "" {
		u += "?" + query
	}
	return u
}

func (n *node) waitLive(t testing.TB, stream string, within time.Duration) media.StreamInfo {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		for _, s := range n.Registry.List() {
			if s.Name == stream {
				return s
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("stream %s never went live", stream)
	return media.StreamInfo{}
}

// ffmpeg runs /usr/bin/ffmpeg until it exits or the test ends.
type ffmpeg struct {
	cmd    *exec.Cmd
	stderr *lockedBuffer
	done   chan struct{}
	err    error
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// ffmpegBinary fails the test if ffmpeg is missing: `make test` installs
// it (scripts/test-deps.sh), tests never skip for lack of it.
func ffmpegBinary(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("ffmpeg")
	if err != nil {
		t.Fatal("ffmpeg not found: run `make test`, which installs it (apt-get install ffmpeg)")
	}
	return p
}

func startFFmpeg(t testing.TB, args ...string) *ffmpeg {
	t.Helper()
	f := &ffmpeg{stderr: &lockedBuffer{}, done: make(chan struct{})}
	f.cmd = exec.Command(ffmpegBinary(t), append([]string{"-hide_banner", "-nostdin", "-loglevel", "warning"}, args...)...)
	f.cmd.Stderr = f.stderr
	if err := f.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		f.err = f.cmd.Wait()
		close(f.done)
	}()
	t.Cleanup(func() {
		select {
		case <-f.done:
		default:
			_ = f.cmd.Process.Kill()
			<-f.done
		}
	})
	return f
}

func (f *ffmpeg) wait(t testing.TB, within time.Duration) error {
	t.Helper()
	select {
	case <-f.done:
		return f.err
	case <-time.After(within):
		_ = f.cmd.Process.Kill()
		<-f.done
		t.Fatalf("ffmpeg did not finish in %v:\n%s", within, f.stderr.String())
		return nil
	}
}

func (f *ffmpeg) kill() {
	_ = f.cmd.Process.Kill()
	<-f.done
}

// Test sources: 640x360 at 25 fps and a tone.
func testSources(seconds float64, sampleRate int) []string {
	return []string{"-re", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=" + strconv.Itoa(sampleRate),
		"-t", strconv.FormatFloat(seconds, 'f', -1, 64)}
}

// publishArgs is an RTSP publish with short GOPs and no B-frames.
func publishArgs(seconds float64, transport, url string) []string {
	args := testSources(seconds, 48000)
	args = append(args, "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "25",
		"-c:a", "libopus", "-b:a", "64k", "-f", "rtsp", "-rtsp_transport", transport, url)
	return args
}

// viewer is a WHEP player that reassembles what it receives.
type viewer struct {
	p *whipclient.Player

	mu         sync.Mutex
	depack     h264.Depacketizer
	aus        [][][]byte // H.264 access units, NAL units copied
	sps        *h264.SPS
	firstVideo time.Time
	opus       int
	opusBad    int
	videoPkts  int
	started    time.Time
}

func playWHEP(t testing.TB, endpoint string) *viewer {
	t.Helper()
	v := &viewer{started: time.Now()}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := whipclient.Play(ctx, endpoint, whipclient.OnRTP(func(tr *webrtc.TrackRemote, pkt *rtp.Packet) {
		v.mu.Lock()
		defer v.mu.Unlock()
		switch tr.Kind() {
		case webrtc.RTPCodecTypeVideo:
			v.videoPkts++
			if v.firstVideo.IsZero() {
				v.firstVideo = time.Now()
			}
			cp := &rtp.Packet{Header: pkt.Header, Payload: append([]byte(nil), pkt.Payload...)}
			aus, _ := v.depack.Push(cp)
			for _, au := range aus {
				var nalus [][]byte
				for _, n := range au.NALUs {
					nalus = append(nalus, append([]byte(nil), n...))
					if h264.TypeOf(n) == h264.NALUTypeSPS && v.sps == nil {
						if s, err := h264.ParseSPS(n); err == nil {
							v.sps = s
						}
					}
				}
				v.aus = append(v.aus, nalus)
			}
		case webrtc.RTPCodecTypeAudio:
			if _, err := opus.PacketDuration(pkt.Payload); err == nil {
				v.opus++
			} else {
				v.opusBad++
			}
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	v.p = p
	t.Cleanup(func() { _ = p.Close() })
	return v
}

func (v *viewer) snapshot() (aus [][][]byte, sps *h264.SPS, opusN, opusBad int, firstVideo time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([][][]byte(nil), v.aus...), v.sps, v.opus, v.opusBad, v.firstVideo
}

// decode has ffmpeg decode the access units the viewer assembled and
// returns the frame count and picture size. A decoder complaint fails the
// test, unless the viewer lost packets for good (UDP on a loaded machine,
// past what NACK recovered): a dropped access unit then leaves a gap the
// decoder remarks on, which is logged with the loss, as long as the loss
// stays under 2% of the access units.
func (v *viewer) decode(t testing.TB) (frames, width, height int) {
	t.Helper()
	v.mu.Lock()
	aus, st := append([][][]byte(nil), v.aus...), v.depack.Stats()
	v.mu.Unlock()
	frames, width, height, complaints := whiptest.DecodeH264(t, strings.Replace(ffmpegBinary(t), "ffmpeg", "ffprobe", 1), aus)
	switch {
	case complaints == "":
	case st.PacketsLost > 0 && st.AccessUnitsDropped*50 <= uint64(len(aus)):
		t.Logf("decoder remarks after %d packets lost, %d access units dropped of %d:\n%s", st.PacketsLost, st.AccessUnitsDropped, len(aus), complaints)
	default:
		t.Fatalf("decoder complained (packets lost %d, access units dropped %d of %d):\n%s", st.PacketsLost, st.AccessUnitsDropped, len(aus), complaints)
	}
	return frames, width, height
}

// opusPacket is the i-th packet of a 20 ms Opus stream (a silence frame).
func opusPacket(i int) *rtp.Packet {
	return &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: uint16(i), Timestamp: uint32(i * 960), SSRC: 9},
		Payload: []byte{0xf8, 0xff, 0xfe}}
}
