package rtsp_test

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/backchannel/backchannel/internal/demo"
	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/rtc"
	"github.com/backchannel/backchannel/internal/whipclient/whiptest"
)

// TestFFmpegPublishPlaysOverWHEP: ffmpeg publishes H.264 + Opus over RTSP
// (TCP-interleaved and UDP); a WHEP viewer gets H.264 that reassembles
// into access units, carries an SPS of the right size and decodes without
// a single complaint, and Opus audio.
func TestFFmpegPublishPlaysOverWHEP(t *testing.T) {
	for _, transport := range []string{"tcp", "udp"} {
		t.Run(transport, func(t *testing.T) {
			t.Parallel()
			n := startNode(t, nodeOptions{})
			pub := startFFmpeg(t, publishArgs(5, transport, n.rtspURL("x", "key="+whiptest.Key))...)
			info := n.waitLive(t, "x", 10*time.Second)
			if info.Protocol != media.ProtocolRTSP || info.KeyID != "master" || info.Publisher == "" || info.Node != "test-ingest" {
				t.Fatalf("stream info %+v", info)
			}
			v := playWHEP(t, n.WHEP("x"))
			if err := pub.wait(t, 15*time.Second); err != nil {
				t.Fatalf("ffmpeg: %v\n%s", err, pub.stderr.String())
			}
			time.Sleep(200 * time.Millisecond)
			aus, sps, opusN, opusBad, _ := v.snapshot()
			if sps == nil || sps.Width != 640 || sps.Height != 360 {
				t.Fatalf("SPS %+v, want 640x360", sps)
			}
			if len(aus) < 60 {
				t.Fatalf("%d access units in ~4 s at 25 fps", len(aus))
			}
			if first := aus[0]; !hasIDR(first) {
				t.Fatal("the viewer's first access unit is not an IDR picture")
			}
			frames, w, h := v.decode(t)
			if frames != len(aus) || w != 640 || h != 360 {
				t.Fatalf("decoded %d frames of %dx%d from %d access units", frames, w, h, len(aus))
			}
			if opusN < 100 || opusBad != 0 {
				t.Fatalf("opus packets: %d good, %d bad", opusN, opusBad)
			}
			t.Logf("%s: viewer decoded %d frames (%dx%d), %d Opus packets", transport, frames, w, h, opusN)
		})
	}
}

func hasIDR(au [][]byte) bool {
	for _, n := range au {
		if n[0]&0x1f == 5 {
			return true
		}
	}
	return false
}

// TestFFmpegDefaultsWithAAC: libx264's defaults (B-frames, a keyframe
// every 250 frames) and AAC register both tracks with the right
// parameters; WHEP viewers get video only (AAC is not playable over
// WebRTC). It reports how long a viewer joining mid-GOP waits for its
// first frame.
func TestFFmpegDefaultsWithAAC(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOptions{})
	args := testSources(13, 44100)
	args = append(args, "-c:v", "libx264", "-preset", "veryfast", "-c:a", "aac", "-b:a", "96k", "-ac", "2",
		"-f", "rtsp", "-rtsp_transport", "tcp", n.rtspURL("dflt", "key="+whiptest.Key))
	pub := startFFmpeg(t, args...)
	n.waitLive(t, "dflt", 10*time.Second)

	// Let the encoder get past its first keyframe, then join mid-GOP.
	time.Sleep(2500 * time.Millisecond)
	var info media.StreamInfo
	for _, s := range n.Registry.List() {
		if s.Name == "dflt" {
			info = s
		}
	}
	if len(info.Tracks) != 2 {
		t.Fatalf("tracks %+v", info.Tracks)
	}
	v, a := info.Tracks[0], info.Tracks[1]
	if v.Codec != media.MimeH264 || v.Width != 640 || v.Height != 360 || v.FPS != 25 || v.BitrateKbps <= 0 {
		t.Errorf("video track %+v", v)
	}
	if a.Codec != media.MimeAAC || a.SampleRate != 44100 || a.Channels != 2 || a.ClockRate != 44100 || a.BitrateKbps <= 0 {
		t.Errorf("audio track %+v", a)
	}
	if !strings.Contains(v.Fmtp, "profile-level-id=64") {
		t.Errorf("libx264's default is the High profile; fmtp %q", v.Fmtp)
	}

	joined := time.Now()
	viewer := playWHEP(t, n.WHEP("dflt"))
	for _, tr := range viewer.p.Tracks() {
		if tr.Kind().String() == "audio" {
			t.Error("AAC reached a WHEP viewer")
		}
	}
	answer, err := rtc.ParseOffer(viewer.p.PeerConnection().CurrentRemoteDescription().SDP)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range answer.Media {
		if m.Kind == "audio" && m.Sends() {
			t.Errorf("the WHEP answer sends audio for an AAC stream: %+v", m)
		}
		if m.Kind == "video" && !m.Sends() {
			t.Errorf("the WHEP answer does not send video: %+v", m)
		}
	}
	deadline := time.Now().Add(12 * time.Second)
	var first time.Time
	for time.Now().Before(deadline) {
		if _, _, _, _, f := viewer.snapshot(); !f.IsZero() {
			first = f
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if first.IsZero() {
		t.Fatal("the viewer never got video")
	}
	t.Logf("WHEP viewer joining mid-GOP (libx264 defaults: keyint 250 at 25 fps) waited %v for its first frame", first.Sub(joined).Round(time.Millisecond))
	if err := pub.wait(t, 20*time.Second); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, pub.stderr.String())
	}
	aus, sps, _, _, _ := viewer.snapshot()
	if sps == nil || sps.Width != 640 || sps.ProfileIDC != 100 {
		t.Fatalf("SPS %+v", sps)
	}
	frames, _, _ := viewer.decode(t)
	if frames != len(aus) || frames < 25 {
		t.Fatalf("decoded %d of %d access units", frames, len(aus))
	}
}

// readWithFFmpeg plays a stream with ffmpeg as an RTSP reader for 4
// seconds and returns its log; errors fail the test.
func readWithFFmpeg(t *testing.T, url, transport string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, ffmpegBinary(t), "-hide_banner", "-nostdin", "-loglevel", "error", "-stats",
		"-rtsp_transport", transport, "-i", url, "-t", "4", "-f", "null", "-")
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("ffmpeg reader hung:\n%s", out)
	}
	if err != nil {
		t.Fatalf("ffmpeg reader failed: %v\n%s", err, out)
	}
	// -loglevel error: anything but the progress lines is a complaint,
	// except the null muxer's about timestamps: ffmpeg re-bases RTP time on
	// each sender report, and a publisher whose reports jitter against its
	// packets (a WebRTC sender on a loaded machine) can step a frame back.
	// That is muxing, not decoding.
	retimed := 0
	for _, line := range strings.Split(strings.ReplaceAll(string(out), "\r", "\n"), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "frame=") || strings.HasPrefix(line, "size=") || strings.HasPrefix(line, "video:") {
			continue
		}
		if strings.HasPrefix(line, "[null @") && strings.Contains(line, "non monotonically increasing dts") {
			retimed++
			continue
		}
		t.Fatalf("ffmpeg reader complained: %q\n%s", line, out)
	}
	if retimed > 0 {
		t.Logf("the null muxer saw %d non-increasing timestamps", retimed)
	}
	return string(out)
}

// TestFFmpegReadsStreams: ffmpeg as an RTSP reader decodes a stream
// published over WHIP (the demo clip: H.264 + Opus, parameter sets only in
// band) and one published over RTSP, over TCP and UDP, without errors.
func TestFFmpegReadsStreams(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- demo.Run(ctx, n.WHIP("demo"), whiptest.Key, nil) }()
	t.Cleanup(func() { cancel(); <-done })
	pub := startFFmpeg(t, publishArgs(14, "tcp", n.rtspURL("cam", "key="+whiptest.Key))...)
	n.waitLive(t, "demo", 10*time.Second)
	n.waitLive(t, "cam", 10*time.Second)
	time.Sleep(500 * time.Millisecond) // the demo's first SPS, for DESCRIBE

	for _, c := range []struct{ stream, transport string }{{"demo", "tcp"}, {"cam", "tcp"}, {"demo", "udp"}} {
		out := readWithFFmpeg(t, n.rtspURL(c.stream, ""), c.transport)
		if !strings.Contains(out, "frame=") {
			t.Fatalf("%s over %s: no progress:\n%s", c.stream, c.transport, out)
		}
		t.Logf("ffmpeg read %s over %s: %s", c.stream, c.transport, lastProgress(out))
	}
	if err := pub.wait(t, 20*time.Second); err != nil {
		t.Fatalf("publisher: %v\n%s", err, pub.stderr.String())
	}
}

func lastProgress(out string) string {
	lines := strings.Split(strings.ReplaceAll(out, "\r", "\n"), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(strings.TrimSpace(lines[i]), "frame=") {
			return strings.TrimSpace(lines[i])
		}
	}
	return ""
}

// TestFFmpegH265Passthrough: H.265 from an RTSP publisher is registered
// with its size, forwarded as it came (ffmpeg reads it back and decodes it)
// and left out of WHEP answers (the viewer gets the Opus track).
func TestFFmpegH265Passthrough(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOptions{})
	args := testSources(9, 48000)
	args = append(args, "-c:v", "libx265", "-preset", "ultrafast", "-tune", "zerolatency", "-x265-params", "keyint=25:log-level=error",
		"-c:a", "libopus", "-f", "rtsp", "-rtsp_transport", "tcp", n.rtspURL("hevc", "key="+whiptest.Key))
	pub := startFFmpeg(t, args...)
	info := n.waitLive(t, "hevc", 10*time.Second)
	if v := info.Tracks[0]; v.Codec != media.MimeH265 || v.Width != 640 || v.Height != 360 {
		t.Fatalf("H.265 track %+v", v)
	}
	viewer := playWHEP(t, n.WHEP("hevc"))
	out := readWithFFmpeg(t, n.rtspURL("hevc", ""), "tcp")
	t.Logf("ffmpeg read H.265 over tcp: %s", lastProgress(out))
	_, _, opusN, _, firstVideo := viewer.snapshot()
	if !firstVideo.IsZero() || opusN < 50 {
		t.Fatalf("WHEP viewer of an H.265 stream: video %v, %d Opus packets", !firstVideo.IsZero(), opusN)
	}
	if err := pub.wait(t, 20*time.Second); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, pub.stderr.String())
	}
}
