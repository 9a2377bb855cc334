package cmaf_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/backchannel/backchannel/internal/cmaf"
	"github.com/backchannel/backchannel/internal/cmaf/cmaftest"
	"github.com/backchannel/backchannel/internal/fmp4"
	"github.com/backchannel/backchannel/internal/media"
)

// collector is an Output that keeps everything.
type collector struct {
	mu    sync.Mutex
	inits []cmaf.Init
	parts []cmaf.Part
	end   error
	ended chan struct{}
}

func newCollector() *collector { return &collector{ended: make(chan struct{})} }

func (c *collector) WriteInit(in cmaf.Init) {
	c.mu.Lock()
	c.inits = append(c.inits, in)
	c.mu.Unlock()
}

func (c *collector) WritePart(p cmaf.Part) {
	c.mu.Lock()
	c.parts = append(c.parts, p)
	c.mu.Unlock()
}

func (c *collector) End(reason error) {
	c.end = reason
	close(c.ended)
}

// file writes init 1 and every part of it to a temporary .mp4.
func (c *collector) file(t *testing.T) string {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.inits) == 0 {
		t.Fatal("no init segment")
	}
	b := append([]byte(nil), c.inits[0].Data...)
	for _, p := range c.parts {
		if p.Init == c.inits[0].ID {
			b = append(b, p.Data...)
		}
	}
	path := filepath.Join(t.TempDir(), "out.mp4")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func run(t *testing.T, src *cmaftest.Source, cfg cmaf.Config, speed float64) *collector {
	t.Helper()
	reg := media.NewRegistry("test")
	reg.SetOfflineGrace(0)
	defer reg.Close()
	pub := cmaftest.Publish(t, reg, "s", src)
	st, _ := reg.Lookup("s")
	out := newCollector()
	seg, err := cmaf.Start(st, cfg, out)
	if err != nil {
		t.Fatal(err)
	}
	if err := cmaftest.Feed(context.Background(), pub, src, speed); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // let the goroutine take the queue
	pub.Close()                        // grace 0: the stream ends, sinks detach
	select {
	case <-out.ended:
	case <-time.After(5 * time.Second):
		t.Fatal("segmenter did not end with the stream")
	}
	seg.Close()
	if !errors.Is(out.end, media.ErrStreamEnded) {
		t.Errorf("End(%v), want ErrStreamEnded", out.end)
	}
	if st := seg.Stats(); st.PacketsQueueFull != 0 {
		t.Errorf("%d packets dropped on a full queue", st.PacketsQueueFull)
	}
	return out
}

// TestDemoClipH264Opus: a WHIP-like source (H.264 baseline with in-band
// parameter sets, Opus) becomes 200 ms parts in 1 s segments that start
// at keyframes, and ffprobe/ffmpeg accept the result.
func TestDemoClipH264Opus(t *testing.T) {
	src := cmaftest.DemoClip(t, 1)
	out := run(t, src, cmaf.Config{}, 8)

	if len(out.inits) != 1 {
		t.Fatalf("%d init segments, want 1", len(out.inits))
	}
	in := out.inits[0]
	if in.Codecs != "avc1.42c01e,opus" || in.Width != 640 || in.Height != 360 || !in.Video || !in.Audio {
		t.Errorf("init %+v", in)
	}
	var segs []time.Duration
	var segDur time.Duration
	for i, p := range out.parts {
		if p.SegmentStart && !p.Independent {
			t.Errorf("part %d starts a segment but is not independent", i)
		}
		if i > 0 && p.Start != out.parts[i-1].Start+out.parts[i-1].Duration {
			t.Errorf("part %d starts at %v, previous ended at %v", i, p.Start, out.parts[i-1].Start+out.parts[i-1].Duration)
		}
		if !p.SegmentEnd && (p.Duration < 180*time.Millisecond || p.Duration > 220*time.Millisecond) {
			t.Errorf("part %d lasts %v, want about 200 ms", i, p.Duration)
		}
		segDur += p.Duration
		if p.SegmentEnd {
			segs = append(segs, segDur)
			segDur = 0
		}
	}
	// 6 s with a keyframe every second: 6 segments of 1 s (the last one
	// flushed at the end).
	if len(segs) != 6 {
		t.Fatalf("segments %v, want 6", segs)
	}
	for i, d := range segs[:5] {
		if d < 990*time.Millisecond || d > 1010*time.Millisecond {
			t.Errorf("segment %d lasts %v, want 1 s", i, d)
		}
	}

	file := out.file(t)
	p := cmaftest.FFprobe(t, file)
	v, ok := p.Stream("video")
	if !ok || v.CodecName != "h264" || v.Width != 640 || v.Height != 360 || v.FrameRate() != 30 {
		t.Errorf("ffprobe video: %+v", v)
	}
	a, ok := p.Stream("audio")
	if !ok || a.CodecName != "opus" || a.SampleRate != "48000" {
		t.Errorf("ffprobe audio: %+v", a)
	}
	counts := cmaftest.CheckMonotonic(t, p)
	if counts[v.Index] != 180 {
		t.Errorf("%d video packets, want the clip's 180 frames", counts[v.Index])
	}
	if counts[a.Index] < 295 {
		t.Errorf("%d audio packets, want about 300", counts[a.Index])
	}
	if msg := cmaftest.Decode(t, file); msg != "" {
		t.Errorf("ffmpeg decode: %s", msg)
	}
}

// TestX264BFramesAAC: an RTSP-like source (libx264 defaults with B-frames,
// sprop-parameter-sets, AAC in mpeg4-generic) keeps its composition
// offsets and decodes cleanly.
func TestX264BFramesAAC(t *testing.T) {
	src := cmaftest.X264AAC(t, 4)
	out := run(t, src, cmaf.Config{}, 8)
	if len(out.inits) != 1 || out.inits[0].Codecs[:5] != "avc1." || out.inits[0].Codecs[len(out.inits[0].Codecs)-9:] != "mp4a.40.2" {
		t.Fatalf("inits %+v", out.inits)
	}
	file := out.file(t)
	p := cmaftest.FFprobe(t, file)
	v, _ := p.Stream("video")
	a, _ := p.Stream("audio")
	if v.CodecName != "h264" || v.Width != 640 || v.Height != 360 || v.HasBFrames == 0 {
		t.Errorf("ffprobe video: %+v", v)
	}
	if a.CodecName != "aac" || a.SampleRate != "48000" {
		t.Errorf("ffprobe audio: %+v", a)
	}
	counts := cmaftest.CheckMonotonic(t, p)
	reordered := 0
	for _, pk := range p.Packets {
		if pk.StreamIndex == v.Index && *pk.PTS != *pk.DTS {
			reordered++
		}
	}
	if counts[v.Index] != 120 || reordered == 0 {
		t.Errorf("%d video packets (want 120), %d with PTS ≠ DTS (want B-frames)", counts[v.Index], reordered)
	}
	if msg := cmaftest.Decode(t, file); msg != "" {
		t.Errorf("ffmpeg decode: %s", msg)
	}
}

// TestNoPartsForRecording: with NoParts every segment is one fragment.
func TestNoPartsForRecording(t *testing.T) {
	out := run(t, cmaftest.DemoClip(t, 1), cmaf.Config{NoParts: true, SegmentTarget: 2 * time.Second}, 8)
	if len(out.parts) != 3 {
		t.Fatalf("%d parts, want 3 segments of 2 s", len(out.parts))
	}
	for i, p := range out.parts {
		if !p.SegmentStart || !p.SegmentEnd || !p.Independent {
			t.Errorf("part %d: %+v", i, p)
		}
		b, err := fmp4.ReadBoxes(p.Data)
		if err != nil || len(b) != 2 || b[0].Type != "moof" {
			t.Errorf("part %d is not one moof+mdat: %v", i, err)
		}
	}
}

// TestParameterChangeStaysInBand: when a publisher's SPS changes (here: a
// High-profile encode after the baseline demo clip, as an encoder
// reconfiguring itself), the init segment stays and the new parameter
// sets travel in band; ffmpeg decodes the whole without an error.
func TestParameterChangeStaysInBand(t *testing.T) {
	a := cmaftest.DemoClip(t, 1)
	b := cmaftest.X264AAC(t, 2)
	// Video of b after a, on a's timeline and sequence numbers; a's audio only.
	var last media.Packet
	_ = last
	src := &cmaftest.Source{Codecs: a.Codecs, Length: a.Length + b.Length}
	src.Packets = append(src.Packets, a.Packets...)
	var seq uint16
	var ts uint32
	for _, p := range a.Packets {
		if p.Kind == media.KindVideo {
			seq, ts = p.RTP.SequenceNumber, p.RTP.Timestamp
		}
	}
	var base uint32
	for _, p := range b.Packets {
		if p.Kind != media.KindVideo {
			continue
		}
		if base == 0 {
			base = p.RTP.Timestamp
		}
		cp := *p.RTP
		seq++
		cp.SequenceNumber = seq
		cp.Timestamp = ts + 3000 + (p.RTP.Timestamp - base)
		src.Packets = append(src.Packets, cmaftest.Packet{Kind: media.KindVideo, At: a.Length + p.At, RTP: &cp})
	}
	out := run(t, src, cmaf.Config{}, 8)
	if len(out.inits) != 1 {
		t.Fatalf("%d inits, want 1", len(out.inits))
	}
	p := cmaftest.FFprobe(t, out.file(t))
	v, _ := p.Stream("video")
	if n := cmaftest.CheckMonotonic(t, p)[v.Index]; n != 180+60 {
		t.Errorf("%d video frames, want 240", n)
	}
	if msg := cmaftest.Decode(t, out.file(t)); msg != "" {
		t.Errorf("ffmpeg decode across the parameter change: %s", msg)
	}
}

// TestUnsupportedTracks: a VP8-only stream cannot be muxed; VP8 + Opus
// gives audio only.
func TestUnsupportedTracks(t *testing.T) {
	reg := media.NewRegistry("test")
	defer reg.Close()
	vp8 := media.Codec{MimeType: media.MimeVP8, ClockRate: 90000}
	opusC := media.Codec{MimeType: media.MimeOpus, ClockRate: 48000, Channels: 2}
	cmaftest.Publish(t, reg, "vp8", &cmaftest.Source{Codecs: []media.Codec{vp8}})
	st, _ := reg.Lookup("vp8")
	if _, err := cmaf.Start(st, cmaf.Config{}, newCollector()); !errors.Is(err, cmaf.ErrNoSupportedTrack) {
		t.Errorf("VP8 only: %v, want ErrNoSupportedTrack", err)
	}
	cmaftest.Publish(t, reg, "both", &cmaftest.Source{Codecs: []media.Codec{vp8, opusC}})
	st, _ = reg.Lookup("both")
	seg, err := cmaf.Start(st, cmaf.Config{}, newCollector())
	if err != nil {
		t.Fatalf("VP8 + Opus: %v", err)
	}
	seg.Close()
}

// TestCloseFlushes: Close ends the output with ErrClosed after a last part.
func TestCloseFlushes(t *testing.T) {
	reg := media.NewRegistry("test")
	defer reg.Close()
	src := cmaftest.DemoClip(t, 1)
	pub := cmaftest.Publish(t, reg, "s", src)
	st, _ := reg.Lookup("s")
	out := newCollector()
	seg, err := cmaf.Start(st, cmaf.Config{}, out)
	if err != nil {
		t.Fatal(err)
	}
	half := &cmaftest.Source{Codecs: src.Codecs, Packets: src.Packets[:len(src.Packets)/2]}
	if err := cmaftest.Feed(context.Background(), pub, half, 10); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	seg.Close()
	if !errors.Is(out.end, cmaf.ErrClosed) {
		t.Errorf("End(%v), want ErrClosed", out.end)
	}
	if len(out.parts) == 0 || !out.parts[len(out.parts)-1].SegmentEnd {
		t.Errorf("last part does not end its segment")
	}
	if st, _ := st.Track(media.KindVideo); st.SinkCount() != 0 {
		t.Errorf("%d sinks left attached", st.SinkCount())
	}
	if msg := cmaftest.Decode(t, out.file(t)); msg != "" {
		t.Errorf("ffmpeg decode: %s", msg)
	}
}

// TestAudioOnly: an Opus-only stream is cut on audio: 200 ms parts, 1 s
// segments, every part independent.
func TestAudioOnly(t *testing.T) {
	clip := cmaftest.DemoClip(t, 1)
	src := &cmaftest.Source{Codecs: clip.Codecs[1:], Length: clip.Length}
	for _, p := range clip.Packets {
		if p.Kind == media.KindAudio {
			src.Packets = append(src.Packets, p)
		}
	}
	out := run(t, src, cmaf.Config{}, 8)
	if len(out.inits) != 1 || out.inits[0].Codecs != "opus" || out.inits[0].Video {
		t.Fatalf("inits %+v", out.inits)
	}
	segs := 0
	for i, p := range out.parts {
		if !p.Independent {
			t.Errorf("audio part %d not independent", i)
		}
		if !p.SegmentEnd && (p.Duration < 200*time.Millisecond || p.Duration > 220*time.Millisecond) {
			t.Errorf("part %d lasts %v", i, p.Duration)
		}
		if p.SegmentEnd {
			segs++
		}
	}
	if segs < 5 || segs > 7 {
		t.Errorf("%d segments for 6 s of audio", segs)
	}
	p := cmaftest.FFprobe(t, out.file(t))
	if a, ok := p.Stream("audio"); !ok || a.CodecName != "opus" || len(p.Streams) != 1 {
		t.Errorf("ffprobe: %+v", p.Streams)
	}
	cmaftest.CheckMonotonic(t, p)
	if msg := cmaftest.Decode(t, out.file(t)); msg != "" {
		t.Errorf("ffmpeg decode: %s", msg)
	}
}

// TestX265 (RTSP-like H.265 with B-frames): hvc1 with the right codec
// string, composition offsets kept, a clean decode.
func TestX265(t *testing.T) {
	out := run(t, cmaftest.X265(t, 2), cmaf.Config{}, 8)
	if len(out.inits) != 1 || !strings.HasPrefix(out.inits[0].Codecs, "hvc1.1.") || out.inits[0].Width != 640 || out.inits[0].Height != 360 {
		t.Fatalf("inits %+v", out.inits)
	}
	tracks, err := fmp4.ParseInit(out.inits[0].Data)
	if err != nil || tracks[0].SampleEntry != "hvc1" {
		t.Fatalf("init: %+v %v", tracks, err)
	}
	p := cmaftest.FFprobe(t, out.file(t))
	v, _ := p.Stream("video")
	if v.CodecName != "hevc" || v.Width != 640 || v.Height != 360 || v.FrameRate() != 30 {
		t.Errorf("ffprobe: %+v", v)
	}
	if n := cmaftest.CheckMonotonic(t, p)[v.Index]; n != 60 {
		t.Errorf("%d frames, want 60", n)
	}
	if msg := cmaftest.Decode(t, out.file(t)); msg != "" {
		t.Errorf("ffmpeg decode: %s", msg)
	}
}
