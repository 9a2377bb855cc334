package fmp4

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// These helpers run the real ffmpeg and ffprobe, the judges of this
// package's output. A missing tool fails the test: it never skips.

func tool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is required by this test and is not installed (run scripts/test-deps.sh): %v", name, err)
	}
	return p
}

func ffmpeg(t testing.TB, args ...string) {
	t.Helper()
	cmd := exec.Command(tool(t, "ffmpeg"), append([]string{"-hide_banner", "-nostdin", "-v", "error", "-y"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("ffmpeg %v: %v\n%s", args, err, stderr.String())
	}
}

// decodesClean decodes every stream of file with ffmpeg and fails on any
// error or warning it prints.
func decodesClean(t testing.TB, file string) {
	t.Helper()
	cmd := exec.Command(tool(t, "ffmpeg"), "-hide_banner", "-nostdin", "-v", "error", "-i", file, "-f", "null", "-")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil || stderr.Len() > 0 {
		t.Fatalf("ffmpeg decoding %s: %v\n%s", filepath.Base(file), err, stderr.String())
	}
}

type probeStream struct {
	Index        int    `json:"index"`
	CodecName    string `json:"codec_name"`
	CodecType    string `json:"codec_type"`
	CodecTag     string `json:"codec_tag_string"`
	Profile      string `json:"profile"`
	Width        int    `json:"width"`
	Height       int    `json:"height"`
	HasBFrames   int    `json:"has_b_frames"`
	RFrameRate   string `json:"r_frame_rate"`
	AvgFrameRate string `json:"avg_frame_rate"`
	TimeBase     string `json:"time_base"`
	SampleRate   string `json:"sample_rate"`
	Channels     int    `json:"channels"`
	NbFrames     string `json:"nb_frames"`
}

type probePacket struct {
	StreamIndex int    `json:"stream_index"`
	PTS         *int64 `json:"pts"`
	DTS         *int64 `json:"dts"`
	Duration    int64  `json:"duration"`
	Size        string `json:"size"`
	Flags       string `json:"flags"`
}

type probe struct {
	Streams []probeStream `json:"streams"`
	Packets []probePacket `json:"packets"`
}

func (p probe) packetsOf(i int) []probePacket {
	var out []probePacket
	for _, pk := range p.Packets {
		if pk.StreamIndex == i {
			out = append(out, pk)
		}
	}
	return out
}

func ffprobe(t testing.TB, file string) probe {
	t.Helper()
	cmd := exec.Command(tool(t, "ffprobe"), "-v", "error", "-show_streams", "-show_packets", "-of", "json", file)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		t.Fatalf("ffprobe %s: %v\n%s", file, err, stderr.String())
	}
	var p probe
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatal(err)
	}
	return p
}

// source is a stream encoded by ffmpeg at test time: the .mp4 ffmpeg wrote
// (whose packet list gives the timestamps) and the elementary streams
// copied out of it, not re-encoded.
type source struct {
	mp4   string
	probe probe
	video []byte // Annex B
	audio []byte // ADTS or Ogg
}

var (
	sourceMu    sync.Mutex
	sourceCache = map[string]*source{}
	sourceDir   string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if sourceDir != "" {
		os.RemoveAll(sourceDir)
	}
	os.Exit(code)
}

// encode makes (once per test binary) 3 s of testsrc2 640x360 at 30 fps
// and/or a 48 kHz sine, with the given encoder arguments.
func encode(t *testing.T, name string, video, audio []string) *source {
	t.Helper()
	sourceMu.Lock()
	defer sourceMu.Unlock()
	if s := sourceCache[name]; s != nil {
		return s
	}
	if sourceDir == "" {
		d, err := os.MkdirTemp("", "fmp4test")
		if err != nil {
			t.Fatal(err)
		}
		sourceDir = d
	}
	base := filepath.Join(sourceDir, name)
	var args []string
	if video != nil {
		args = append(args, "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30")
	}
	if audio != nil {
		args = append(args, "-f", "lavfi", "-i", "sine=f=440:sample_rate=48000")
	}
	args = append(args, "-t", "3")
	args = append(args, video...)
	args = append(args, audio...)
	s := &source{mp4: base + ".mp4"}
	if audio != nil && audio[1] == "libopus" {
		s.mp4 = base + ".mkv" // ffmpeg's mp4 muxer is the thing under comparison; keep it out
	}
	ffmpeg(t, append(args, s.mp4)...)
	s.probe = ffprobe(t, s.mp4)
	if video != nil {
		bsf, format := "h264_mp4toannexb", "h264"
		if strings.Contains(strings.Join(video, " "), "libx265") {
			bsf, format = "hevc_mp4toannexb", "hevc"
		}
		ffmpeg(t, "-i", s.mp4, "-map", "0:v", "-c", "copy", "-bsf:v", bsf, "-f", format, base+".es")
		s.video = readFile(t, base+".es")
	}
	if audio != nil {
		format := "adts"
		if audio[1] == "libopus" {
			format = "ogg"
		}
		ffmpeg(t, "-i", s.mp4, "-map", "0:a", "-c", "copy", "-f", format, base+".audio")
		s.audio = readFile(t, base+".audio")
	}
	sourceCache[name] = s
	return s
}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rescale converts a timestamp between time bases given as "1/N".
func rescale(t *testing.T, v int64, from string, to int64) int64 {
	t.Helper()
	den, err := strconv.ParseInt(strings.TrimPrefix(from, "1/"), 10, 64)
	if err != nil || !strings.HasPrefix(from, "1/") {
		t.Fatalf("time base %q", from)
	}
	if v*to%den != 0 {
		t.Fatalf("timestamp %d in %s is not a whole number of 1/%d", v, from, to)
	}
	return v * to / den
}

// oggPackets reassembles the packets of an Ogg file's single logical stream.
func oggPackets(t *testing.T, b []byte) [][]byte {
	t.Helper()
	var pkts [][]byte
	var cur []byte
	for len(b) > 0 {
		if len(b) < 27 || string(b[:4]) != "OggS" || len(b) < 27+int(b[26]) {
			t.Fatal("bad Ogg page")
		}
		segs := b[27 : 27+int(b[26])]
		body := b[27+len(segs):]
		size := 27 + len(segs)
		for _, s := range segs {
			cur = append(cur, body[:s]...)
			body = body[s:]
			size += int(s)
			if s < 255 {
				pkts = append(pkts, cur)
				cur = nil
			}
		}
		b = b[size:]
	}
	return pkts
}
