package h265

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/backchannel/backchannel/internal/codec/internal/mediatest"
)

// x265Stream is a libx265 encode kept as an .mp4 (for ffprobe's timestamps)
// and its elementary stream remuxed, not re-encoded, to Annex B.
type x265Stream struct {
	mp4   string
	annex []byte
}

var (
	encodeMu    sync.Mutex
	encodeCache = map[string]x265Stream{}
	encodeDir   string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if encodeDir != "" {
		os.RemoveAll(encodeDir)
	}
	os.Exit(code)
}

// encodeX265 encodes testsrc2 with libx265, once per test binary and
// argument list: 3 s of 640x360 at 30 fps unless the arguments say
// otherwise (later -t, size and rate options win).
func encodeX265(t *testing.T, src string, extra ...string) x265Stream {
	t.Helper()
	if src == "" {
		src = "testsrc2=size=640x360:rate=30"
	}
	key := src + " " + strings.Join(extra, " ")
	encodeMu.Lock()
	defer encodeMu.Unlock()
	if s, ok := encodeCache[key]; ok {
		return s
	}
	if encodeDir == "" {
		d, err := os.MkdirTemp("", "h265test")
		if err != nil {
			t.Fatal(err)
		}
		encodeDir = d
	}
	name := filepath.Join(encodeDir, "s"+string(rune('a'+len(encodeCache))))
	args := []string{"-f", "lavfi", "-i", src, "-t", "3", "-c:v", "libx265"}
	args = append(args, extra...)
	mediatest.FFmpeg(t, append(args, name+".mp4")...)
	mediatest.FFmpeg(t, "-i", name+".mp4", "-c:v", "copy", "-bsf:v", "hevc_mp4toannexb", "-f", "hevc", name+".h265")
	b, err := os.ReadFile(name + ".h265")
	if err != nil {
		t.Fatal(err)
	}
	s := x265Stream{mp4: name + ".mp4", annex: b}
	encodeCache[key] = s
	return s
}

// x265Params quiets libx265 and adds params.
func x265Params(params string) []string {
	p := "log-level=error"
	if params != "" {
		p += ":" + params
	}
	return []string{"-x265-params", p}
}

func timestampsFromMP4(t *testing.T, file string) (pts, dts []int64) {
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
