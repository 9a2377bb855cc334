package fmp4

import (
	"errors"
	"fmt"
	"math"
	mbits "math/bits"
	"time"
)

// DefaultMaxQueuedSamples bounds the samples a Muxer queues per track
// between fragments: a minute of 60 fps video, or of 48 kHz AAC.
const DefaultMaxQueuedSamples = 3600

// NoLimit passed to Muxer.Fragment takes every sample that is ready.
const NoLimit = time.Duration(math.MaxInt64)

// Errors of Muxer.WriteSample.
var (
	ErrUnknownTrack = errors.New("fmp4: unknown track")
	ErrTimestamp    = errors.New("fmp4: invalid sample timestamps")
	ErrQueueFull    = errors.New("fmp4: too many samples queued; cut fragments")
)

// TimedSample is a sample with its timestamps in the track's time scale.
type TimedSample struct {
	// DTS must be non-negative and increase strictly within a track.
	DTS int64
	// PTS - DTS must fit 32 bits; it may be negative.
	PTS int64
	// Duration, when known (audio frames have fixed durations), lets the
	// sample go out before the next one arrives. 0 means the next sample's
	// DTS decides it.
	Duration uint32
	// Sync marks a keyframe; audio samples are always sync.
	Sync bool
	Data []byte
}

// TrackFragmentInfo describes what a fragment holds of one track.
type TrackFragmentInfo struct {
	TrackID   uint32
	TimeScale uint32
	Video     bool
	// StartDTS and EndDTS bound the fragment's samples: EndDTS is the last
	// sample's DTS plus its duration.
	StartDTS, EndDTS int64
	// MinPTS is the earliest presentation time in the fragment.
	MinPTS  int64
	Samples int
	// StartsWithSync reports whether the first sample is a keyframe.
	StartsWithSync bool
}

// FragmentInfo describes a fragment the Muxer emitted, for the playlist
// of a segmenter (EXT-X-PART DURATION and INDEPENDENT) or a recorder's
// index.
type FragmentInfo struct {
	SequenceNumber uint32
	Tracks         []TrackFragmentInfo
}

// Duration returns the longest track's span in the fragment.
func (f *FragmentInfo) Duration() time.Duration {
	var d time.Duration
	for _, t := range f.Tracks {
		d = max(d, TicksToDuration(t.EndDTS-t.StartDTS, t.TimeScale))
	}
	return d
}

// Independent reports whether every video track in the fragment starts with
// a keyframe, so that a player can start decoding here (LL-HLS
// INDEPENDENT=YES).
func (f *FragmentInfo) Independent() bool {
	for _, t := range f.Tracks {
		if t.Video && !t.StartsWithSync {
			return false
		}
	}
	return true
}

// TicksToDuration converts a count of time-scale ticks to a duration.
func TicksToDuration(ticks int64, timeScale uint32) time.Duration {
	if timeScale == 0 {
		return 0
	}
	sec := ticks / int64(timeScale)
	rem := ticks % int64(timeScale)
	return time.Duration(sec)*time.Second + time.Duration(rem*int64(time.Second)/int64(timeScale))
}

// Muxer queues timed samples of several tracks and cuts them into
// fragments on request. A sample leaves the queue once its duration is
// known, that is when the next sample of its track arrives or when it
// carries its own Duration; so a video fragment lags its input by one
// frame. Muxer is not safe for concurrent use.
type Muxer struct {
	// MaxQueuedSamples bounds each track's queue; 0 means
	// DefaultMaxQueuedSamples. WriteSample fails beyond it.
	MaxQueuedSamples int

	init   Init
	tracks []*muxTrack
	seq    uint32
}

type muxTrack struct {
	Track
	queue   []TimedSample
	lastDTS int64
	started bool
	lastDur uint32
}

// NewMuxer validates the tracks and returns a muxer for them.
func NewMuxer(tracks ...Track) (*Muxer, error) {
	in := Init{Tracks: append([]Track(nil), tracks...)}
	if err := in.Validate(); err != nil {
		return nil, err
	}
	m := &Muxer{init: in}
	for _, t := range in.Tracks {
		m.tracks = append(m.tracks, &muxTrack{Track: t})
	}
	return m, nil
}

// Tracks returns the tracks with their defaults filled in.
func (m *Muxer) Tracks() []Track { return append([]Track(nil), m.init.Tracks...) }

// Init returns the init segment.
func (m *Muxer) Init() ([]byte, error) { return m.init.Marshal() }

func (m *Muxer) track(id uint32) *muxTrack {
	for _, t := range m.tracks {
		if t.ID == id {
			return t
		}
	}
	return nil
}

// WriteSample queues a sample of a track.
func (m *Muxer) WriteSample(trackID uint32, s TimedSample) error {
	t := m.track(trackID)
	if t == nil {
		return fmt.Errorf("%w %d", ErrUnknownTrack, trackID)
	}
	if s.DTS < 0 || (t.started && s.DTS <= t.lastDTS) {
		return fmt.Errorf("%w: DTS %d after %d", ErrTimestamp, s.DTS, t.lastDTS)
	}
	if t.started && s.DTS-t.lastDTS > math.MaxUint32 {
		return fmt.Errorf("%w: DTS jumps by %d", ErrTimestamp, s.DTS-t.lastDTS)
	}
	if off := s.PTS - s.DTS; off < math.MinInt32 || off > math.MaxInt32 {
		return fmt.Errorf("%w: PTS %d too far from DTS %d", ErrTimestamp, s.PTS, s.DTS)
	}
	if len(s.Data) == 0 {
		return errors.New("fmp4: empty sample")
	}
	limit := m.MaxQueuedSamples
	if limit <= 0 {
		limit = DefaultMaxQueuedSamples
	}
	if len(t.queue) >= limit {
		return ErrQueueFull
	}
	if !t.Codec.IsVideo() {
		s.Sync = true
	}
	t.queue = append(t.queue, s)
	t.lastDTS, t.started = s.DTS, true
	return nil
}

// Queued returns the number of samples waiting in a track's queue.
func (m *Muxer) Queued(trackID uint32) int {
	if t := m.track(trackID); t != nil {
		return len(t.queue)
	}
	return 0
}

// before reports whether dts (in ticks of timeScale) is earlier than end.
func before(dts int64, timeScale uint32, end time.Duration) bool {
	if end == NoLimit {
		return true
	}
	if end <= 0 {
		return false
	}
	// dts/timeScale < end/1e9, compared exactly in 128 bits.
	hi1, lo1 := mbits.Mul64(uint64(dts), uint64(time.Second))
	hi2, lo2 := mbits.Mul64(uint64(end), uint64(timeScale))
	return hi1 < hi2 || hi1 == hi2 && lo1 < lo2
}

// Fragment emits one fragment holding, for every track, the queued samples
// whose duration is known and whose DTS is before end (a time on the
// tracks' common timeline; NoLimit for all). It returns nil bytes and info
// when no sample is ready. A segmenter cutting at a keyframe passes the
// keyframe's DTS as end, after writing the keyframe.
func (m *Muxer) Fragment(end time.Duration) ([]byte, *FragmentInfo, error) {
	return m.emit(end, false)
}

// Flush emits every queued sample, at the end of a stream. A last sample
// without a Duration takes its predecessor's.
func (m *Muxer) Flush() ([]byte, *FragmentInfo, error) {
	return m.emit(NoLimit, true)
}

func (m *Muxer) emit(end time.Duration, flush bool) ([]byte, *FragmentInfo, error) {
	frag := Fragment{SequenceNumber: m.seq + 1}
	info := &FragmentInfo{SequenceNumber: m.seq + 1}
	taken := make([]int, len(m.tracks))
	for ti, t := range m.tracks {
		var samples []Sample
		n := 0
		for i, s := range t.queue {
			if !before(s.DTS, t.TimeScale, end) {
				break
			}
			var dur uint32
			switch {
			case i+1 < len(t.queue):
				dur = uint32(t.queue[i+1].DTS - s.DTS)
			case s.Duration > 0:
				dur = s.Duration
			case flush && t.lastDur > 0:
				dur = t.lastDur
			case flush:
				dur = 1
			default:
				// Its duration is not known yet.
			}
			if dur == 0 {
				break
			}
			t.lastDur = dur
			samples = append(samples, Sample{
				Duration:          dur,
				CompositionOffset: int32(s.PTS - s.DTS),
				NonSync:           !s.Sync,
				Data:              s.Data,
			})
			n++
		}
		if n == 0 {
			continue
		}
		taken[ti] = n
		first := t.queue[0]
		tinfo := TrackFragmentInfo{TrackID: t.ID, TimeScale: t.TimeScale, Video: t.Codec.IsVideo(), StartDTS: first.DTS,
			MinPTS: first.PTS, Samples: n, StartsWithSync: first.Sync}
		tinfo.EndDTS = first.DTS
		for i, s := range samples {
			tinfo.EndDTS += int64(s.Duration)
			tinfo.MinPTS = min(tinfo.MinPTS, t.queue[i].PTS)
		}
		frag.Tracks = append(frag.Tracks, TrackFragment{TrackID: t.ID, BaseDecodeTime: uint64(first.DTS), Samples: samples})
		info.Tracks = append(info.Tracks, tinfo)
	}
	if len(frag.Tracks) == 0 {
		return nil, nil, nil
	}
	b, err := frag.Marshal()
	if err != nil {
		return nil, nil, err
	}
	for ti, t := range m.tracks {
		n := taken[ti]
		if n == 0 {
			continue
		}
		// Shift the rest to the front and drop references to emitted data.
		rest := copy(t.queue, t.queue[n:])
		clear(t.queue[rest:])
		t.queue = t.queue[:rest]
	}
	m.seq++
	return b, info, nil
}
