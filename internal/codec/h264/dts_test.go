package h264

import (
	"errors"
	"testing"
)

// TestDTSExtractorMatchesLibx264 feeds the access units of real libx264
// streams, with their PTS from the .mp4 ffmpeg wrote, to the extractor and
// requires exactly the DTS that libx264 chose and ffprobe reports.
func TestDTSExtractorMatchesLibx264(t *testing.T) {
	for _, c := range []struct {
		name    string
		args    []string
		reorder int
	}{
		{"default-bframes", nil, 2},
		{"bf0", []string{"-bf", "0"}, 0},
		{"bf1", []string{"-bf", "1"}, 1},
		{"no-pyramid", []string{"-x264-params", "b-pyramid=none:bframes=3"}, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := encodeX264(t, c.args...)
			pts, wantDTS := ptsFromMP4(t, s.mp4)
			aus := SplitAccessUnits(SplitAnnexB(s.annex))
			if len(aus) != len(pts) || len(aus) != 90 {
				t.Fatalf("%d access units, ffprobe lists %d packets", len(aus), len(pts))
			}
			const base = 1 << 32 // as if the RTP clock had wrapped once
			var e DTSExtractor
			reordered := false
			for i, au := range aus {
				dts, err := e.Extract(au, base+pts[i])
				if err != nil {
					t.Fatalf("AU %d: %v", i, err)
				}
				if dts != base+wantDTS[i] {
					t.Fatalf("AU %d: DTS %d, libx264/ffprobe %d (PTS %d)", i, dts-base, wantDTS[i], pts[i])
				}
				if pts[i] != wantDTS[i] {
					reordered = true
				}
			}
			if e.ReorderFrames() != c.reorder {
				t.Errorf("reorder window %d, want %d", e.ReorderFrames(), c.reorder)
			}
			if reordered != (c.reorder > 0) {
				t.Errorf("stream reordered = %v", reordered)
			}
		})
	}
}

func TestDTSExtractorWaitsForIDR(t *testing.T) {
	s := encodeX264(t)
	aus := SplitAccessUnits(SplitAnnexB(s.annex))
	var e DTSExtractor
	if _, err := e.Extract(aus[1], 0); !errors.Is(err, ErrWaitingForKeyframe) {
		t.Fatalf("non-IDR start: err = %v", err)
	}
	// An IDR without an SPS is not enough either, unless given out of band.
	var idrOnly [][]byte
	var sps *SPS
	for _, n := range aus[0] {
		switch TypeOf(n) {
		case NALUTypeIDR:
			idrOnly = append(idrOnly, n)
		case NALUTypeSPS:
			sps, _ = ParseSPS(n)
		}
	}
	if _, err := e.Extract(idrOnly, 0); !errors.Is(err, ErrWaitingForKeyframe) {
		t.Fatalf("IDR without SPS: err = %v", err)
	}
	e.UseSPS(sps)
	dts, err := e.Extract(idrOnly, 9000)
	if err != nil || dts != 9000-2*3000 {
		t.Fatalf("IDR with out-of-band SPS: dts %d err %v", dts, err)
	}
	// A frame reordered further than the SPS allows is refused, and the
	// extractor goes on.
	if _, err := e.Extract(aus[1], 9000-3*3000); !errors.Is(err, ErrPTSBeforeDTS) {
		t.Fatalf("over-reordered frame: err = %v", err)
	}
	if dts, err := e.Extract(aus[1], 9000+3000); err != nil || dts != 9000-3000 {
		t.Fatalf("next frame: dts %d err %v", dts, err)
	}
	e.Reset()
	if _, err := e.Extract(aus[1], 0); !errors.Is(err, ErrWaitingForKeyframe) {
		t.Fatalf("after Reset: err = %v", err)
	}
}
