package fmp4

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"

	"github.com/backchannel/backchannel/internal/codec/aac"
	"github.com/backchannel/backchannel/internal/codec/h264"
	"github.com/backchannel/backchannel/internal/codec/h265"
	"github.com/backchannel/backchannel/internal/codec/opus"
)

// timed is one sample to write, with its time for ordering tracks.
type timed struct {
	track uint32
	at    time.Duration
	s     TimedSample
}

// packagerRun feeds samples to a Muxer the way an LL-HLS segmenter does:
// a fragment (part) whenever ~200 ms of video are ready, and a cut right
// before every keyframe, so segments start independent. It returns init
// and fragments concatenated, and the fragments' info.
func packagerRun(t *testing.T, m *Muxer, writes []timed) ([]byte, []*FragmentInfo) {
	t.Helper()
	sort.SliceStable(writes, func(i, j int) bool { return writes[i].at < writes[j].at })
	out, err := m.Init()
	if err != nil {
		t.Fatal(err)
	}
	var infos []*FragmentInfo
	emit := func(b []byte, info *FragmentInfo, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if b != nil {
			out = append(out, b...)
			infos = append(infos, info)
		}
	}
	var partStart time.Duration
	for _, w := range writes {
		if err := m.WriteSample(w.track, w.s); err != nil {
			t.Fatal(err)
		}
		var video *Track
		for _, tr := range m.Tracks() {
			if tr.ID == w.track && tr.Codec.IsVideo() {
				video = &tr
			}
		}
		switch {
		case video != nil && w.s.Sync:
			emit(m.Fragment(w.at)) // everything before the keyframe
			partStart = w.at
		case video != nil && w.at-partStart >= 200*time.Millisecond:
			emit(m.Fragment(w.at))
			partStart = w.at
		}
	}
	emit(m.Flush())
	return out, infos
}

func writeTemp(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// checkPackets requires ffprobe's packets of one stream to carry exactly
// the intended PTS (in the stream's time base), DTS increasing strictly and
// never above PTS, and keyframe flags where intended.
func checkPackets(t *testing.T, p probe, stream int, wantPTS []int64, wantKey []bool) {
	t.Helper()
	pkts := p.packetsOf(stream)
	if len(pkts) != len(wantPTS) {
		t.Fatalf("stream %d: ffprobe lists %d packets, muxed %d", stream, len(pkts), len(wantPTS))
	}
	var prevDTS int64 = -1 << 62
	for i, pk := range pkts {
		if pk.PTS == nil || pk.DTS == nil {
			t.Fatalf("stream %d packet %d without timestamps", stream, i)
		}
		if *pk.PTS != wantPTS[i] {
			t.Fatalf("stream %d packet %d: PTS %d, intended %d", stream, i, *pk.PTS, wantPTS[i])
		}
		if *pk.DTS <= prevDTS || *pk.DTS > *pk.PTS {
			t.Fatalf("stream %d packet %d: DTS %d after %d, PTS %d", stream, i, *pk.DTS, prevDTS, *pk.PTS)
		}
		prevDTS = *pk.DTS
		if wantKey != nil && (pk.Flags[0] == 'K') != wantKey[i] {
			t.Fatalf("stream %d packet %d: flags %q, keyframe intended %v", stream, i, pk.Flags, wantKey[i])
		}
	}
}

// videoPTS returns the source's video PTS converted to 90 kHz and shifted
// by one second, so that the DTS before them stay non-negative.
func videoPTS(t *testing.T, src *source) []int64 {
	var out []int64
	for _, s := range src.probe.Streams {
		if s.CodecType != "video" {
			continue
		}
		for _, pk := range src.probe.packetsOf(s.Index) {
			out = append(out, rescale(t, *pk.PTS, s.TimeBase, 90000)+90000)
		}
	}
	return out
}

// muxH264OverRTP runs a libx264 stream through the ingest path: pion's
// H.264 payloader (as a WebRTC or RTSP sender), this repository's
// depacketizer and DTS extractor, then the muxer.
func muxH264OverRTP(t *testing.T, src *source, pts []int64) (*Muxer, []timed, []bool) {
	t.Helper()
	aus := h264.SplitAccessUnits(h264.SplitAnnexB(src.video))
	if len(aus) != len(pts) {
		t.Fatalf("%d access units, %d PTS", len(aus), len(pts))
	}
	codec := &H264{}
	for _, n := range aus[0] {
		switch h264.TypeOf(n) {
		case h264.NALUTypeSPS:
			codec.SPS = n
		case h264.NALUTypePPS:
			codec.PPS = n
		}
	}
	m, err := NewMuxer(Track{ID: 1, Codec: codec})
	if err != nil {
		t.Fatal(err)
	}
	pay := rtp.NewPacketizer(1200, 96, 0x42, &codecs.H264Payloader{}, rtp.NewRandomSequencer(), 90000)
	var dep h264.Depacketizer
	var dtsx h264.DTSExtractor
	var writes []timed
	var keys []bool
	for i, au := range aus {
		for _, pkt := range pay.Packetize(h264.AppendAnnexB(nil, au), 0) {
			pkt.Timestamp = uint32(pts[i])
			got, err := dep.Push(pkt)
			if err != nil {
				t.Fatal(err)
			}
			for _, au := range got {
				dts, err := dtsx.Extract(au.NALUs, au.PTS)
				if err != nil {
					t.Fatal(err)
				}
				data, sync := codec.SampleData(au.NALUs)
				writes = append(writes, timed{1, TicksToDuration(dts, 90000),
					TimedSample{DTS: dts, PTS: au.PTS, Sync: sync, Data: data}})
				keys = append(keys, sync)
			}
		}
	}
	return m, writes, keys
}

// TestFFprobeH264 muxes libx264 output, with its default B-frames and with
// -bf 0, received over RTP, into init + fragments, and has ffprobe and
// ffmpeg judge the file.
func TestFFprobeH264(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
		bf   int
	}{
		{"bframes", []string{"-c:v", "libx264"}, 2},
		{"bf0", []string{"-c:v", "libx264", "-bf", "0"}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			src := encode(t, "h264-"+c.name, c.args, nil)
			pts := videoPTS(t, src)
			m, writes, keys := muxH264OverRTP(t, src, pts)
			file, infos := packagerRun(t, m, writes)
			if len(infos) < 14 {
				t.Errorf("only %d fragments for 3 s in ~200 ms parts", len(infos))
			}
			if !infos[0].Independent() {
				t.Error("first fragment not independent")
			}
			out := writeTemp(t, "out.mp4", file)
			p := ffprobe(t, out)
			if len(p.Streams) != 1 {
				t.Fatalf("%d streams", len(p.Streams))
			}
			s := p.Streams[0]
			if s.CodecName != "h264" || s.CodecTag != "avc1" || s.Width != 640 || s.Height != 360 ||
				s.RFrameRate != "30/1" || s.TimeBase != "1/90000" || s.HasBFrames != c.bf {
				t.Errorf("stream %+v", s)
			}
			checkPackets(t, p, 0, pts, keys)
			decodesClean(t, out)
			checkReadBack(t, file, writes)
		})
	}
}

// checkReadBack reads the file with this package's reader and requires
// every sample back with its data and timestamps.
func checkReadBack(t *testing.T, file []byte, writes []timed) {
	t.Helper()
	tracks, err := ParseInit(file)
	if err != nil {
		t.Fatal(err)
	}
	frags, err := ParseFragments(file, Defaults(tracks))
	if err != nil {
		t.Fatal(err)
	}
	got := map[uint32][]ReadSample{}
	for i, f := range frags {
		if f.SequenceNumber != uint32(i+1) {
			t.Fatalf("fragment %d has sequence number %d", i, f.SequenceNumber)
		}
		for _, tf := range f.Tracks {
			if len(tf.Samples) > 0 && int64(tf.BaseDecodeTime) != tf.Samples[0].DTS {
				t.Fatal("tfdt and first DTS disagree")
			}
			got[tf.TrackID] = append(got[tf.TrackID], tf.Samples...)
		}
	}
	next := map[uint32]int{}
	for _, w := range writes {
		i := next[w.track]
		next[w.track]++
		if i >= len(got[w.track]) {
			t.Fatalf("track %d: only %d samples read back", w.track, len(got[w.track]))
		}
		r := got[w.track][i]
		if r.DTS != w.s.DTS || r.PTS != w.s.PTS || r.IsSync() != w.s.Sync ||
			!bytes.Equal(r.Data, w.s.Data) {
			t.Fatalf("track %d sample %d read back as DTS %d PTS %d sync %v (%d bytes); wrote %d %d %v (%d bytes)",
				w.track, i, r.DTS, r.PTS, r.IsSync(), len(r.Data), w.s.DTS, w.s.PTS, w.s.Sync, len(w.s.Data))
		}
	}
}

// TestFFprobeH265 muxes libx265 output (B-frames, open GOP) into hvc1.
func TestFFprobeH265(t *testing.T) {
	src := encode(t, "h265", []string{"-c:v", "libx265", "-x265-params", "log-level=error:keyint=30"}, nil)
	pts := videoPTS(t, src)
	aus := h265.SplitAccessUnits(h265.SplitAnnexB(src.video))
	if len(aus) != len(pts) {
		t.Fatalf("%d access units, %d PTS", len(aus), len(pts))
	}
	codec := &H265{}
	for _, n := range aus[0] {
		switch h265.TypeOf(n) {
		case h265.NALUTypeVPS:
			codec.VPS = n
		case h265.NALUTypeSPS:
			codec.SPS = n
		case h265.NALUTypePPS:
			codec.PPS = n
		}
	}
	m, err := NewMuxer(Track{ID: 1, Codec: codec})
	if err != nil {
		t.Fatal(err)
	}
	var dtsx h265.DTSExtractor
	var writes []timed
	var keys []bool
	for i, au := range aus {
		dts, err := dtsx.Extract(au, pts[i])
		if err != nil {
			t.Fatal(err)
		}
		data, sync := codec.SampleData(au)
		writes = append(writes, timed{1, TicksToDuration(dts, 90000), TimedSample{DTS: dts, PTS: pts[i], Sync: sync, Data: data}})
		keys = append(keys, sync)
	}
	file, _ := packagerRun(t, m, writes)
	out := writeTemp(t, "out.mp4", file)
	p := ffprobe(t, out)
	s := p.Streams[0]
	if len(p.Streams) != 1 || s.CodecName != "hevc" || s.CodecTag != "hvc1" || s.Width != 640 || s.Height != 360 ||
		s.RFrameRate != "30/1" || s.Profile != "Main" {
		t.Errorf("stream %+v", s)
	}
	checkPackets(t, p, 0, pts, keys)
	decodesClean(t, out)
	checkReadBack(t, file, writes)
}

// TestFFprobeH264AndAAC muxes video and ADTS AAC audio into the same
// fragments and requires both streams' timestamps as intended, so they
// stay in sync.
func TestFFprobeH264AndAAC(t *testing.T) {
	src := encode(t, "av", []string{"-c:v", "libx264"}, []string{"-c:a", "aac", "-ac", "2"})
	pts := videoPTS(t, src)
	m0, video, keys := muxH264OverRTP(t, src, pts)
	frames, err := aac.SplitADTS(src.audio)
	if err != nil {
		t.Fatal(err)
	}
	asc, err := frames[0].Config.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewMuxer(m0.Tracks()[0], Track{ID: 2, Codec: &AAC{Config: asc}})
	if err != nil {
		t.Fatal(err)
	}
	audioSrc := src.probe.packetsOf(1)
	if src.probe.Streams[1].TimeBase != "1/48000" || len(audioSrc) != len(frames) {
		t.Fatalf("audio source: %s, %d packets for %d frames", src.probe.Streams[1].TimeBase, len(audioSrc), len(frames))
	}
	writes := video
	var audioPTS []int64
	for i, f := range frames {
		ts := *audioSrc[i].PTS + 48000 // the video's one-second shift
		audioPTS = append(audioPTS, ts)
		writes = append(writes, timed{2, TicksToDuration(ts, 48000),
			TimedSample{DTS: ts, PTS: ts, Duration: uint32(f.Config.SamplesPerFrame()), Sync: true, Data: f.AU}})
	}
	file, infos := packagerRun(t, m, writes)
	both := 0
	for _, in := range infos {
		if len(in.Tracks) == 2 {
			both++
		}
	}
	if both < len(infos)/2 {
		t.Errorf("only %d of %d fragments carry both tracks", both, len(infos))
	}
	out := writeTemp(t, "out.mp4", file)
	p := ffprobe(t, out)
	if len(p.Streams) != 2 {
		t.Fatalf("%d streams", len(p.Streams))
	}
	a := p.Streams[1]
	if a.CodecName != "aac" || a.Profile != "LC" || a.SampleRate != "48000" || a.Channels != 2 || a.TimeBase != "1/48000" {
		t.Errorf("audio stream %+v", a)
	}
	checkPackets(t, p, 0, pts, keys)
	checkPackets(t, p, 1, audioPTS, nil)
	decodesClean(t, out)
	checkReadBack(t, file, writes)

	// The codec strings match what ffmpeg's own HLS muxer declares for
	// streams from the same encoders and settings (it declares them only
	// when it encodes).
	dir := t.TempDir()
	ffmpeg(t, "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30", "-f", "lavfi", "-i", "sine=f=440:sample_rate=48000",
		"-t", "1", "-c:v", "libx264", "-c:a", "aac", "-ac", "2", "-f", "hls", "-hls_segment_type", "fmp4",
		"-master_pl_name", "master.m3u8", filepath.Join(dir, "x.m3u8"))
	master := readFile(t, filepath.Join(dir, "master.m3u8"))
	want := regexp.MustCompile(`CODECS="([^"]+)"`).FindSubmatch(master)
	if want == nil || string(want[1]) != Codecs(m.Tracks()) {
		t.Errorf("CODECS %q, ffmpeg's HLS muxer says %q", Codecs(m.Tracks()), want)
	}
}

// TestFFprobeOpus muxes libopus packets from an Ogg file, with durations
// from their TOC bytes.
func TestFFprobeOpus(t *testing.T) {
	src := encode(t, "opus", nil, []string{"-c:a", "libopus", "-ac", "2"})
	pkts := oggPackets(t, src.audio)
	head, err := opus.ParseOpusHead(pkts[0])
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewMuxer(Track{ID: 1, Codec: &Opus{Head: head}})
	if err != nil {
		t.Fatal(err)
	}
	var writes []timed
	var want []int64
	var ts int64
	for _, pk := range pkts[2:] {
		d, err := opus.PacketDuration(pk)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, ts)
		writes = append(writes, timed{1, TicksToDuration(ts, 48000), TimedSample{DTS: ts, PTS: ts, Duration: uint32(d), Sync: true, Data: pk}})
		ts += int64(d)
	}
	file, _ := packagerRun(t, m, writes)
	out := writeTemp(t, "out.mp4", file)
	p := ffprobe(t, out)
	s := p.Streams[0]
	if len(p.Streams) != 1 || s.CodecName != "opus" || s.SampleRate != "48000" || s.Channels != 2 || s.CodecTag != "Opus" {
		t.Errorf("stream %+v", s)
	}
	checkPackets(t, p, 0, want, nil)
	decodesClean(t, out)
	checkReadBack(t, file, writes)
}
