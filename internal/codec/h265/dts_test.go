package h265

import (
	"errors"
	"testing"

	"github.com/backchannel/backchannel/internal/codec/internal/mediatest"
)

// TestDTSExtractorMatchesLibx265 compares the DTS with those libx265 chose,
// as ffprobe reports them from the .mp4 ffmpeg wrote. They must be equal up
// to a constant shift (exactly equal where libx265 delays decoding by just
// the reorder depth it declares; with bframes=1 it delays one frame more
// than needed, which the extractor does not).
func TestDTSExtractorMatchesLibx265(t *testing.T) {
	for _, c := range []struct {
		name   string
		params string
		shift  int64
	}{
		{"default", "", 0},
		{"bframes0", "bframes=0", 0},
		{"bframes8-pyramid", "bframes=8:b-pyramid=1", 0},
		{"bframes1", "bframes=1", 3000},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := encodeX265(t, "", x265Params(c.params)...)
			pts, wantDTS := timestampsFromMP4(t, s.mp4)
			aus := SplitAccessUnits(SplitAnnexB(s.annex))
			if len(aus) != len(pts) || len(aus) != 90 {
				t.Fatalf("%d access units, ffprobe lists %d packets", len(aus), len(pts))
			}
			var e DTSExtractor
			for i, au := range aus {
				dts, err := e.Extract(au, 90000+pts[i])
				if err != nil {
					t.Fatalf("AU %d: %v", i, err)
				}
				if dts != 90000+wantDTS[i]+c.shift {
					t.Fatalf("AU %d: DTS %d, libx265/ffprobe %d", i, dts-90000, wantDTS[i])
				}
				if dts > 90000+pts[i] {
					t.Fatalf("AU %d: DTS %d above PTS %d", i, dts-90000, pts[i])
				}
			}
			if want := mediatest.FFprobe(t, s.mp4).Streams[0].HasBFrames; e.ReorderFrames() != want {
				t.Errorf("reorder window %d, ffprobe has_b_frames %d", e.ReorderFrames(), want)
			}
		})
	}
}

func TestDTSExtractorWaitsForIRAP(t *testing.T) {
	s := encodeX265(t, "", x265Params("")...)
	aus := SplitAccessUnits(SplitAnnexB(s.annex))
	var e DTSExtractor
	if _, err := e.Extract(aus[1], 0); !errors.Is(err, ErrWaitingForKeyframe) {
		t.Fatalf("err = %v", err)
	}
	if _, err := e.Extract(aus[0], 6000); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Extract(aus[1], 0); !errors.Is(err, ErrPTSBeforeDTS) {
		t.Fatalf("a picture before the window: err = %v", err)
	}

	// An SPS given out of band, and a restart.
	sps, err := ParseSPS(firstOf(t, aus[0], NALUTypeSPS))
	if err != nil {
		t.Fatal(err)
	}
	var idr [][]byte
	for _, n := range aus[0] {
		if TypeOf(n).IsVCL() {
			idr = append(idr, n)
		}
	}
	e = DTSExtractor{}
	if _, err := e.Extract(idr, 9000); !errors.Is(err, ErrWaitingForKeyframe) {
		t.Fatalf("no SPS yet: %v", err)
	}
	e.UseSPS(sps)
	if dts, err := e.Extract(idr, 9000); err != nil || dts != 9000-int64(sps.MaxNumReorderPics)*3000 {
		t.Fatalf("out-of-band SPS: %d %v", dts, err)
	}
	e.Reset()
	if _, err := e.Extract(aus[1], 12000); !errors.Is(err, ErrWaitingForKeyframe) {
		t.Fatalf("after Reset: %v", err)
	}
}
