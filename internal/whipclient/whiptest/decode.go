package whiptest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/backchannel/backchannel/internal/codec/h264"
)

// DecodeH264 has ffprobe (the path of its binary) decode access units
// (their NAL units) as one Annex B stream. It returns the frames decoded,
// the picture size and what the decoder complained about ("" for
// nothing); what to make of a complaint is the caller's to say, since a
// viewer that lost packets for good hands the decoder a gap.
func DecodeH264(t testing.TB, ffprobe string, aus [][][]byte) (frames, width, height int, complaints string) {
	t.Helper()
	var annexB []byte
	for _, au := range aus {
		annexB = h264.AppendAnnexB(annexB, au)
	}
	path := filepath.Join(t.TempDir(), "viewer.h264")
	if err := os.WriteFile(path, annexB, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(ffprobe, "-v", "error", "-count_frames", "-select_streams", "v:0",
		"-show_entries", "stream=nb_read_frames,width,height", "-of", "csv=p=0", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	last := lines[len(lines)-1]
	if _, err := fmt.Sscanf(last, "%d,%d,%d", &width, &height, &frames); err != nil {
		t.Fatalf("ffprobe output %q: %v", out, err)
	}
	return frames, width, height, strings.Join(lines[:len(lines)-1], "\n")
}
