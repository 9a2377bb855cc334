// Package mediatest runs the real ffmpeg and ffprobe for the codec
// packages' tests: it encodes test streams at test time and reads back what
// ffprobe reports about them. A missing tool fails the test; it never skips.
package mediatest

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// Tool returns the path of ffmpeg or ffprobe, failing the test when it is
// not installed (scripts/test-deps.sh installs it).
func Tool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is required by this test and is not installed (run scripts/test-deps.sh): %v", name, err)
	}
	return p
}

// FFmpeg runs ffmpeg with args (after -v error -y) and fails on error.
func FFmpeg(t testing.TB, args ...string) {
	t.Helper()
	bin := Tool(t, "ffmpeg")
	cmd := exec.Command(bin, append([]string{"-hide_banner", "-nostdin", "-v", "error", "-y"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("ffmpeg %v: %v\n%s", args, err, stderr.String())
	}
}

// Encode writes a file under t.TempDir() by running ffmpeg with args then
// the output name, and returns the file's path and contents.
func Encode(t testing.TB, name string, args ...string) (string, []byte) {
	t.Helper()
	out := filepath.Join(t.TempDir(), name)
	FFmpeg(t, append(args, out)...)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return out, b
}

// Stream is the part of ffprobe's -show_streams output the tests check.
type Stream struct {
	Index        int    `json:"index"`
	CodecName    string `json:"codec_name"`
	CodecType    string `json:"codec_type"`
	Profile      string `json:"profile"`
	Level        int    `json:"level"`
	Width        int    `json:"width"`
	Height       int    `json:"height"`
	PixFmt       string `json:"pix_fmt"`
	FieldOrder   string `json:"field_order"`
	HasBFrames   int    `json:"has_b_frames"`
	RFrameRate   string `json:"r_frame_rate"`
	AvgFrameRate string `json:"avg_frame_rate"`
	TimeBase     string `json:"time_base"`
	SampleRate   string `json:"sample_rate"`
	Channels     int    `json:"channels"`
	CodecTag     string `json:"codec_tag_string"`
}

// Packet is one entry of ffprobe's -show_packets output.
type Packet struct {
	StreamIndex int    `json:"stream_index"`
	PTS         *int64 `json:"pts"`
	DTS         *int64 `json:"dts"`
	Duration    int64  `json:"duration"`
	Size        string `json:"size"`
	Flags       string `json:"flags"`
}

// SizeBytes returns the packet size as a number.
func (p Packet) SizeBytes() int {
	n, _ := strconv.Atoi(p.Size)
	return n
}

// Probe is ffprobe's report on a file.
type Probe struct {
	Streams []Stream `json:"streams"`
	Packets []Packet `json:"packets"`
}

// PacketsOf returns the packets of one stream, in file order.
func (p Probe) PacketsOf(stream int) []Packet {
	var out []Packet
	for _, pk := range p.Packets {
		if pk.StreamIndex == stream {
			out = append(out, pk)
		}
	}
	return out
}

// FFprobe runs ffprobe -show_streams -show_packets on file.
func FFprobe(t testing.TB, file string) Probe {
	t.Helper()
	bin := Tool(t, "ffprobe")
	cmd := exec.Command(bin, "-v", "error", "-show_streams", "-show_packets", "-of", "json", file)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v\n%s", file, err, stderr.String())
	}
	var p Probe
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatalf("ffprobe output: %v", err)
	}
	return p
}
