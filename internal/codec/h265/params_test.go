package h265

import (
	"encoding/hex"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/backchannel/backchannel/internal/codec/internal/mediatest"
)

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

var ffprobeProfiles = map[string]uint8{"Main": 1, "Main 10": 2, "Main Still Picture": 3, "Rext": 4}

func firstOf(t *testing.T, nalus [][]byte, typ NALUType) []byte {
	t.Helper()
	for _, n := range nalus {
		if TypeOf(n) == typ {
			return n
		}
	}
	t.Fatalf("no %v in the stream", typ)
	return nil
}

// TestParseParamsAgainstFFprobe encodes streams with libx265 in several
// shapes and checks the parsed VPS and SPS against ffprobe.
func TestParseParamsAgainstFFprobe(t *testing.T) {
	cases := []struct {
		name, size, rate string
		args             []string
	}{
		{"main-cropped", "650x366", "25", x265Params("")},
		{"main10-ntsc", "320x240", "30000/1001", append([]string{"-pix_fmt", "yuv420p10le"}, x265Params("")...)},
		{"rext444-scaling", "352x288", "24", append([]string{"-pix_fmt", "yuv444p"}, x265Params("scaling-list=default")...)},
		{"temporal-layers", "320x180", "50", x265Params("temporal-layers=1")},
		{"no-bframes", "176x144", "15", x265Params("bframes=0")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"-f", "lavfi", "-i", "testsrc2=size=" + c.size + ":rate=" + c.rate,
				"-frames:v", "4", "-c:v", "libx265"}, c.args...)
			file, data := mediatest.Encode(t, "x.h265", append(args, "-f", "hevc")...)
			probe := mediatest.FFprobe(t, file)
			if len(probe.Streams) != 1 {
				t.Fatalf("ffprobe found %d streams", len(probe.Streams))
			}
			want := probe.Streams[0]
			nalus := SplitAnnexB(data)
			vps, err := ParseVPS(firstOf(t, nalus, NALUTypeVPS))
			if err != nil {
				t.Fatal(err)
			}
			sps, err := ParseSPS(firstOf(t, nalus, NALUTypeSPS))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ParsePPS(firstOf(t, nalus, NALUTypePPS)); err != nil {
				t.Fatal(err)
			}
			if sps.Width != want.Width || sps.Height != want.Height {
				t.Errorf("size %dx%d, ffprobe says %dx%d", sps.Width, sps.Height, want.Width, want.Height)
			}
			if p, ok := ffprobeProfiles[want.Profile]; !ok || p != sps.PTL.ProfileIDC || vps.PTL != sps.PTL {
				t.Errorf("profile %d (VPS %d), ffprobe says %q", sps.PTL.ProfileIDC, vps.PTL.ProfileIDC, want.Profile)
			}
			if int(sps.PTL.LevelIDC) != want.Level {
				t.Errorf("level %d, ffprobe says %d", sps.PTL.LevelIDC, want.Level)
			}
			if int(sps.MaxNumReorderPics) != want.HasBFrames {
				t.Errorf("reorder %d, ffprobe has_b_frames %d", sps.MaxNumReorderPics, want.HasBFrames)
			}
			wantFPS := parseRate(t, c.rate)
			if math.Abs(sps.FrameRate()-wantFPS) > 1e-6 {
				t.Errorf("SPS frame rate %v, encoded at %v", sps.FrameRate(), wantFPS)
			}
			if vps.TimingInfoPresent && math.Abs(float64(vps.TimeScale)/float64(vps.NumUnitsInTick)-wantFPS) > 1e-6 {
				t.Errorf("VPS timing %d/%d", vps.TimeScale, vps.NumUnitsInTick)
			}
			if strings.Contains(want.PixFmt, "10le") != (sps.BitDepthLuma == 10) ||
				strings.Contains(want.PixFmt, "444") != (sps.ChromaFormatIDC == 3) {
				t.Errorf("bit depth %d chroma %d, ffprobe pix_fmt %q", sps.BitDepthLuma, sps.ChromaFormatIDC, want.PixFmt)
			}
		})
	}
}

// A libx265 VPS and SPS (Main, level 2.1, 650x366 coded as 656x368 with a
// conformance window, 25 fps), with the fields that matter decoded by hand
// from the bytes after the 2-byte NAL header:
//
//	SPS 01      sps_video_parameter_set_id 0, max_sub_layers_minus1 0,
//	            temporal_id_nesting 1
//	    01      profile_space 0, tier 0 (Main tier), profile_idc 1 (Main)
//	    60 00 00 [03] 00   compatibility flags 1 and 2 -> reversed 0x6
//	                       ([03] is an emulation prevention byte)
//	    90 00 00 [03] 00 00 [03] 00   progressive_source 1, interlaced 0,
//	            non_packed 0, frame_only 1 -> constraint byte 0x90
//	    3f      general_level_idc 63 (level 2.1)
const (
	fixedVPS = "40010c01ffff01600000030090000003000003003f959809"
	fixedSPS = "42010101600000030090000003000003003fa005220171c9596566924caf016808000003000800000300c840"
)

func TestParseFixedParams(t *testing.T) {
	b, _ := hex.DecodeString(fixedSPS)
	s, err := ParseSPS(b)
	if err != nil {
		t.Fatal(err)
	}
	if s.PTL.ProfileIDC != 1 || s.PTL.Tier || s.PTL.LevelIDC != 63 ||
		s.PTL.CompatibilityFlags != 0x60000000 || s.PTL.ConstraintFlags != 0x900000000000 {
		t.Errorf("PTL %+v", s.PTL)
	}
	if got := s.CodecString(); got != "hvc1.1.6.L63.90" {
		t.Errorf("codec string %q", got)
	}
	v, _ := hex.DecodeString(fixedVPS)
	vps, err := ParseVPS(v)
	if err != nil || vps.PTL != s.PTL {
		t.Fatalf("VPS %+v %v", vps, err)
	}
}

func TestCodecString(t *testing.T) {
	// Examples from ISO/IEC 14496-15 E.3.
	for _, c := range []struct {
		ptl  ProfileTierLevel
		want string
	}{
		{ProfileTierLevel{ProfileIDC: 1, CompatibilityFlags: 0x60000000, ConstraintFlags: 0xB0 << 40, LevelIDC: 93}, "hvc1.1.6.L93.B0"},
		{ProfileTierLevel{ProfileSpace: 1, ProfileIDC: 4, Tier: true, CompatibilityFlags: 0x82000000,
			ConstraintFlags: 0xB0<<40 | 0x23<<32, LevelIDC: 120}, "hvc1.A4.41.H120.B0.23"},
	} {
		if got := c.ptl.CodecString(); got != c.want {
			t.Errorf("CodecString = %q, want %q", got, c.want)
		}
	}
}

func TestParseParamsRejects(t *testing.T) {
	sps, _ := hex.DecodeString(fixedSPS)
	for name, in := range map[string][]byte{
		"empty": nil, "header only": {0x42, 0x01}, "truncated": sps[:20], "a VPS": {0x40, 0x01, 0x0c},
	} {
		if _, err := ParseSPS(in); err == nil {
			t.Errorf("%s: ParseSPS accepted", name)
		}
	}
	if _, err := ParseVPS(sps); err == nil {
		t.Error("ParseVPS accepted an SPS")
	}
	if _, err := ParsePPS([]byte{0x44, 0x01}); err == nil {
		t.Error("ParsePPS accepted an empty PPS")
	}
}

func FuzzParseSPS(f *testing.F) {
	b, _ := hex.DecodeString(fixedSPS)
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseSPS(b)
		if err != nil {
			return
		}
		if s.Width <= 0 || s.Height <= 0 || s.Width > 16888 || s.Height > 16888 {
			t.Fatalf("accepted size %dx%d", s.Width, s.Height)
		}
		_ = s.CodecString()
	})
}

func FuzzParseVPS(f *testing.F) {
	b, _ := hex.DecodeString(fixedVPS)
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		if v, err := ParseVPS(b); err == nil {
			_ = v.PTL.CodecString()
		}
		_, _ = ParsePPS(b)
	})
}
