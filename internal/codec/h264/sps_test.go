package h264

import (
	"encoding/hex"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/backchannel/backchannel/internal/codec/internal/mediatest"
)

// parseRate parses ffprobe's "num/den" rates.
func parseRate(t *testing.T, s string) float64 {
	t.Helper()
	num, den, ok := strings.Cut(s, "/")
	if !ok {
		den = "1"
	}
	n, err1 := strconv.ParseFloat(num, 64)
	d, err2 := strconv.ParseFloat(den, 64)
	if err1 != nil || err2 != nil || d == 0 {
		t.Fatalf("bad rate %q", s)
	}
	return n / d
}

var ffprobeProfiles = map[string]uint8{
	"Baseline": 66, "Constrained Baseline": 66, "Main": 77, "High": 100,
	"High 10": 110, "High 4:2:2": 122, "High 4:4:4 Predictive": 244,
}

// TestParseSPSAgainstFFprobe encodes streams with libx264 in several shapes
// (profiles, cropping, scaling matrices, 4:4:4, 10-bit, interlacing,
// fractional frame rates) and checks the parsed SPS against ffprobe.
func TestParseSPSAgainstFFprobe(t *testing.T) {
	cases := []struct {
		name, size, rate string
		args             []string
	}{
		{"baseline-cropped", "650x366", "25", []string{"-profile:v", "baseline"}},
		{"main", "640x360", "30", []string{"-profile:v", "main"}},
		{"high-bframes-ntsc", "320x240", "30000/1001", nil},
		{"high-scaling-matrix", "352x288", "24", []string{"-x264-params", "cqm=jvt"}},
		{"high444-scaling", "330x202", "50", []string{"-pix_fmt", "yuv444p", "-x264-params", "cqm=jvt"}},
		{"high422", "320x180", "30", []string{"-pix_fmt", "yuv422p"}},
		{"high10", "320x180", "30", []string{"-pix_fmt", "yuv420p10le"}},
		{"interlaced", "720x576", "25", []string{"-flags", "+ildct+ilme", "-x264-params", "interlaced=1"}},
		{"no-bframes", "176x144", "15", []string{"-bf", "0"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := fmt.Sprintf("testsrc2=size=%s:rate=%s", c.size, c.rate)
			args := append([]string{"-f", "lavfi", "-i", src, "-frames:v", "4", "-c:v", "libx264"}, c.args...)
			args = append(args, "-f", "h264")
			file, data := mediatest.Encode(t, "x.h264", args...)
			probe := mediatest.FFprobe(t, file)
			if len(probe.Streams) != 1 {
				t.Fatalf("ffprobe found %d streams", len(probe.Streams))
			}
			want := probe.Streams[0]

			var sps *SPS
			for _, n := range SplitAnnexB(data) {
				if TypeOf(n) == NALUTypeSPS {
					s, err := ParseSPS(n)
					if err != nil {
						t.Fatalf("ParseSPS(%x): %v", n, err)
					}
					sps = s
					break
				}
			}
			if sps == nil {
				t.Fatal("no SPS in the stream")
			}
			if sps.Width != want.Width || sps.Height != want.Height {
				t.Errorf("size %dx%d, ffprobe says %dx%d", sps.Width, sps.Height, want.Width, want.Height)
			}
			if p, ok := ffprobeProfiles[want.Profile]; !ok || p != sps.ProfileIDC {
				t.Errorf("profile_idc %d, ffprobe says %q", sps.ProfileIDC, want.Profile)
			}
			if int(sps.LevelIDC) != want.Level {
				t.Errorf("level %d, ffprobe says %d", sps.LevelIDC, want.Level)
			}
			if sps.ReorderFrames() != want.HasBFrames {
				t.Errorf("reorder frames %d, ffprobe has_b_frames %d", sps.ReorderFrames(), want.HasBFrames)
			}
			wantFPS := parseRate(t, c.rate)
			if math.Abs(sps.FrameRate()-wantFPS) > 1e-6 {
				t.Errorf("frame rate %v, encoded at %v", sps.FrameRate(), wantFPS)
			}
			if got := strings.HasPrefix(want.FieldOrder, "progressive"); got != sps.FrameMbsOnly && want.FieldOrder != "unknown" {
				t.Errorf("frame_mbs_only %v, ffprobe field_order %q", sps.FrameMbsOnly, want.FieldOrder)
			}
			if strings.Contains(want.PixFmt, "444") != (sps.ChromaFormatIDC == 3) ||
				strings.Contains(want.PixFmt, "422") != (sps.ChromaFormatIDC == 2) {
				t.Errorf("chroma_format_idc %d, ffprobe pix_fmt %q", sps.ChromaFormatIDC, want.PixFmt)
			}
			if strings.Contains(want.PixFmt, "10le") != (sps.BitDepthLuma == 10) {
				t.Errorf("bit depth %d, ffprobe pix_fmt %q", sps.BitDepthLuma, want.PixFmt)
			}
		})
	}
}

// A fixed libx264 SPS, decoded by hand (RBSP bits after the header):
//
//	42 c0 1e     profile_idc 66, constraint_set0+1 (Constrained Baseline), level_idc 30
//	d9 00        1 sps_id 0 | 1 log2_max_frame_num 4 | 011 poc_type 2 |
//	             00100 max_num_ref_frames 3 | 0 gaps
//	a4 2f        000001 01001 pic_width_in_mbs 41 (656) | 0000 1 0111 height 23 (368) |
//	             1 frame_mbs_only
//	e4 ac        1 direct_8x8 | 1 cropping | 1 left 0 | 00100 right 3 (6 px) |
//	             1 top 0 | 010 bottom 1 (2 px) -> 650x366 | 1 vui_present
//	...          VUI: timing num_units_in_tick 1, time_scale 50 -> 25 fps
const fixedSPS = "6742c01ed900a42fe4ac0440000003004000000c83c58b92"

func TestParseSPSFixed(t *testing.T) {
	b, _ := hex.DecodeString(fixedSPS)
	s, err := ParseSPS(b)
	if err != nil {
		t.Fatal(err)
	}
	if s.ProfileIDC != 66 || s.ConstraintFlags != 0xc0 || s.LevelIDC != 30 {
		t.Errorf("profile/constraints/level = %d/%#x/%d", s.ProfileIDC, s.ConstraintFlags, s.LevelIDC)
	}
	if s.Width != 650 || s.Height != 366 {
		t.Errorf("size %dx%d", s.Width, s.Height)
	}
	if s.PicOrderCntType != 2 || s.ReorderFrames() != 0 {
		t.Errorf("poc type %d reorder %d", s.PicOrderCntType, s.ReorderFrames())
	}
	if s.FrameRate() != 25 {
		t.Errorf("frame rate %v", s.FrameRate())
	}
	if got := s.CodecString(); got != "avc1.42c01e" {
		t.Errorf("codec string %q", got)
	}
}

func TestParseSPSRejects(t *testing.T) {
	for name, in := range map[string]string{
		"not an SPS":   "68ce3c80",
		"empty":        "",
		"truncated":    "6742c0",
		"bad poc type": "6764001eacd9",
	} {
		b, _ := hex.DecodeString(in)
		if _, err := ParseSPS(b); err == nil {
			t.Errorf("%s: ParseSPS(%s) accepted", name, in)
		}
	}
}

func FuzzParseSPS(f *testing.F) {
	for _, s := range []string{
		fixedSPS,
		"6764001eacd940a42fe4ac0440000003004000000c83c58b658",
		"67f4001e919b281485fcf780880000030008000003019078b16cb0",
	} {
		b, _ := hex.DecodeString(s)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseSPS(b)
		if err != nil {
			return
		}
		if s.Width <= 0 || s.Height <= 0 || s.Width > 16384 || s.Height > 16384 {
			t.Fatalf("accepted size %dx%d", s.Width, s.Height)
		}
		_ = s.CodecString()
		if r := s.ReorderFrames(); r < 0 || r > 16 {
			t.Fatalf("reorder %d", r)
		}
	})
}
