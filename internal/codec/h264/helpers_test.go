package h264

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/backchannel/backchannel/internal/codec/internal/mediatest"
)

// x264Stream is a libx264 encode kept as an .mp4 (for ffprobe's timestamps)
// and its elementary stream remuxed, not re-encoded, to Annex B.
type x264Stream struct {
	mp4   string
	annex []byte
}

var (
	encodeMu    sync.Mutex
	encodeCache = map[string]x264Stream{}
	encodeDir   string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if encodeDir != "" {
		os.RemoveAll(encodeDir)
	}
	os.Exit(code)
}

// encodeX264 encodes 3 s of 640x360 testsrc2 at 30 fps with libx264 and the
// extra arguments, once per test binary.
func encodeX264(t testing.TB, extra ...string) x264Stream {
	t.Helper()
	key := strings.Join(extra, " ")
	encodeMu.Lock()
	defer encodeMu.Unlock()
	if s, ok := encodeCache[key]; ok {
		return s
	}
	if encodeDir == "" {
		d, err := os.MkdirTemp("", "h264test")
		if err != nil {
			t.Fatal(err)
		}
		encodeDir = d
	}
	name := filepath.Join(encodeDir, "s"+string(rune('a'+len(encodeCache))))
	args := []string{"-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30", "-t", "3", "-c:v", "libx264"}
	args = append(args, extra...)
	mediatest.FFmpeg(t, append(args, name+".mp4")...)
	mediatest.FFmpeg(t, "-i", name+".mp4", "-c:v", "copy", "-bsf:v", "h264_mp4toannexb", "-f", "h264", name+".h264")
	b, err := os.ReadFile(name + ".h264")
	if err != nil {
		t.Fatal(err)
	}
	s := x264Stream{mp4: name + ".mp4", annex: b}
	encodeCache[key] = s
	return s
}

// ptsFromMP4 returns, in decode order, each access unit's PTS and DTS as
// ffprobe reports them in the .mp4, converted to 90 kHz. The timescale is
// checked to convert exactly.
func ptsFromMP4(t testing.TB, file string) (pts, dts []int64) {
	t.Helper()
	probe := mediatest.FFprobe(t, file)
	if len(probe.Streams) != 1 || probe.Streams[0].TimeBase != "1/15360" {
		t.Fatalf("unexpected streams %+v", probe.Streams)
	}
	for _, p := range probe.PacketsOf(0) {
		if p.PTS == nil || p.DTS == nil {
			t.Fatal("packet without timestamps")
		}
		pts = append(pts, *p.PTS*90000/15360)
		dts = append(dts, *p.DTS*90000/15360)
	}
	return pts, dts
}
