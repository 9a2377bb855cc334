package h264

import (
	"errors"
	"fmt"

	"github.com/backchannel/backchannel/internal/codec/internal/dtsqueue"
)

// ErrWaitingForKeyframe is returned by DTSExtractor.Extract until an access
// unit with an IDR picture and a known SPS arrives.
var ErrWaitingForKeyframe = errors.New("h264: waiting for an IDR access unit with a known SPS")

// ErrPTSBeforeDTS is returned by DTSExtractor.Extract for an access unit
// whose PTS is below the DTS its decode position needs: the stream
// reorders more than its SPS declares. Drop the unit (or restart at the
// next keyframe); the extractor stays usable.
var ErrPTSBeforeDTS = dtsqueue.ErrPTSBeforeDTS

// DTSExtractor assigns decode timestamps to access units given in decode
// order with their presentation timestamps (90 kHz). The DTS it returns
// increase strictly and never exceed the PTS, so PTS - DTS is a valid fMP4
// composition offset.
//
// It uses a reorder window of SPS.ReorderFrames frames (see
// docs/fmp4.md): the n-th access unit gets the (n-N)-th smallest PTS seen,
// and the first N units, before the window fills, get DTS extrapolated
// backwards by the VUI frame duration (or 1/30 s). No slice header is
// parsed, so every POC type, field coding and loss of non-reference
// frames is handled alike.
//
// The zero value is ready; it picks the SPS up from the access units.
type DTSExtractor struct {
	q       dtsqueue.Queue
	sps     *SPS
	started bool
}

// UseSPS gives the extractor an SPS received out of band (SDP
// sprop-parameter-sets, an avcC), for streams that do not repeat it in band.
func (e *DTSExtractor) UseSPS(s *SPS) {
	e.sps = s
	e.q.SetReorder(s.ReorderFrames())
	if fps := s.FrameRate(); fps > 0 {
		e.q.SetFrameDuration(int64(90000/fps + 0.5))
	}
}

// ReorderFrames returns the window size in use.
func (e *DTSExtractor) ReorderFrames() int { return e.q.Reorder() }

// Reset restarts the extractor, for a discontinuity in the timestamps. It
// will wait for the next IDR.
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
				return 0, fmt.Errorf("h264: DTS extractor: %w", err)
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
