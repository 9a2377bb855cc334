// Package dtsqueue derives decode timestamps from the presentation
// timestamps of frames given in decode order, for codecs that reorder
// frames (H.264, H.265). It is the reorder-window method: with at most N
// frames preceding any frame in decode order and following it in output
// order, the frame decoded k-th can use as its DTS the k-N-th smallest PTS
// seen, which is always known by then, never above the frame's own PTS,
// and never decreasing. libx264 and libx265 assign DTS exactly this way.
package dtsqueue

import "errors"

// ErrPTSBeforeDTS is returned for a frame whose PTS lies below the DTS its
// position requires: the stream reorders more than it declared, or the
// frame is a leading picture of the random access point the queue started
// on (and cannot be decoded anyway).
var ErrPTSBeforeDTS = errors.New("frame presented before it can be decoded")

// Queue holds the window. The zero value has a window of 0 frames (DTS =
// PTS) and a default frame duration of 3000 ticks (30 fps at 90 kHz).
type Queue struct {
	reorder  int
	frameDur int64
	pending  []int64 // the largest PTS seen, ascending, at most reorder
	started  bool
	prevDTS  int64
}

// SetReorder sets the window to n frames. The window only grows: shrinking
// it mid-stream would need two DTS values for one frame.
func (q *Queue) SetReorder(n int) {
	if n > q.reorder {
		q.reorder = n
	}
}

// Reorder returns the window size in frames.
func (q *Queue) Reorder() int { return q.reorder }

// SetFrameDuration sets the duration used to extrapolate DTS for the first
// frames, before the window has filled.
func (q *Queue) SetFrameDuration(d int64) {
	if d > 0 {
		q.frameDur = d
	}
}

// Reset forgets every frame, keeping the window size and frame duration.
func (q *Queue) Reset() {
	q.pending = q.pending[:0]
	q.started = false
	q.prevDTS = 0
}

// Next returns the DTS of the next frame in decode order. On error the
// frame is not counted, so the caller may drop it and go on.
func (q *Queue) Next(pts int64) (int64, error) {
	dur := q.frameDur
	if dur <= 0 {
		dur = 3000
	}
	// Insert pts into the ascending window without committing yet.
	i := len(q.pending)
	for i > 0 && q.pending[i-1] > pts {
		i--
	}
	var dts int64
	var popped bool
	if len(q.pending)+1 > q.reorder {
		if i == 0 {
			dts = pts
		} else {
			dts = q.pending[0]
		}
		popped = true
	} else {
		// The window is still filling: extrapolate backwards from the
		// smallest PTS by the frames still missing.
		least := pts
		if len(q.pending) > 0 && q.pending[0] < least {
			least = q.pending[0]
		}
		dts = least - int64(q.reorder-len(q.pending))*dur
	}
	if q.started && dts <= q.prevDTS {
		dts = q.prevDTS + 1
	}
	if dts > pts {
		return 0, ErrPTSBeforeDTS
	}
	q.pending = append(q.pending, 0)
	copy(q.pending[i+1:], q.pending[i:])
	q.pending[i] = pts
	if popped {
		copy(q.pending, q.pending[1:])
		q.pending = q.pending[:len(q.pending)-1]
	}
	q.started = true
	q.prevDTS = dts
	return dts, nil
}
