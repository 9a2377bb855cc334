package h265

import (
	"errors"
	"fmt"

	"github.com/backchannel/backchannel/internal/codec/internal/dtsqueue"
)

// ErrWaitingForKeyframe is returned by DTSExtractor.Extract until an access
// unit with an IRAP picture and a known SPS arrives.
var ErrWaitingForKeyframe = errors.New("h265: waiting for an IRAP access unit with a known SPS")

// ErrPTSBeforeDTS is returned by DTSExtractor.Extract for an access unit
// whose PTS is below the DTS its decode position needs: the stream
// reorders more than its SPS declares, or it is a RASL picture of the CRA
// the extractor started on (such pictures cannot be decoded anyway). Drop
// the unit; the extractor stays usable.
var ErrPTSBeforeDTS = dtsqueue.ErrPTSBeforeDTS

// DTSExtractor assigns decode timestamps to access units given in decode
// order with their presentation timestamps (90 kHz), by the same reorder
// window as h264.DTSExtractor, sized by sps_max_num_reorder_pics of the
// highest sub-layer, which every H.265 SPS codes. The DTS increase
// strictly and never exceed the PTS.
//
// The zero value is ready; it picks the SPS up from the access units.
type DTSExtractor struct {
	q       dtsqueue.Queue
	sps     *SPS
	started bool
}

// UseSPS gives the extractor an SPS received out of band.
func (e *DTSExtractor) UseSPS(s *SPS) {
	e.sps = s
	e.q.SetReorder(int(s.MaxNumReorderPics))
	if fps := s.FrameRate(); fps > 0 {
		e.q.SetFrameDuration(int64(90000/fps + 0.5))
	}
}

// ReorderFrames returns the window size in use.
func (e *DTSExtractor) ReorderFrames() int { return e.q.Reorder() }

// Reset restarts the extractor; it will wait for the next IRAP picture.
func (e *DTSExtractor) Reset() {
	e.q.Reset()
	e.started = false
}

// Extract returns the DTS of au, whose PTS is pts.
func (e *DTSExtractor) Extract(au [][]byte, pts int64) (int64, error) {
	for _, n := range au {
		if TypeOf(n) == NALUTypeSPS {
			s, err := ParseSPS(n)
			if err != nil {
				return 0, fmt.Errorf("h265: DTS extractor: %w", err)
			}
			e.UseSPS(s)
		}
	}
	if !e.started {
		if e.sps == nil || !IsKeyframe(au) {
			return 0, ErrWaitingForKeyframe
		}
		e.started = true
	}
	return e.q.Next(pts)
}
