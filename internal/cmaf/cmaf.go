// Package cmaf cuts a live media.Stream into CMAF fragments: it attaches a
// sink to each of the stream's tracks, turns their RTP packets into access
// units with decode and presentation times (internal/codec), muxes them
// with internal/fmp4 and cuts the result into parts of about PartTarget
// that group into segments of about SegmentTarget, each segment starting
// at a video keyframe. It is the one muxing pipeline behind both the
// LL-HLS packager (edge/hls) and the recorder (internal/record).
//
// Codecs: H.264 and H.265 video (parameter sets from the fmtp or in band;
// a change starts a new init segment), Opus and AAC (mpeg4-generic) audio.
// Other tracks (VP8, G.711) are left out.
package cmaf

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"

	"github.com/backchannel/backchannel/internal/fmp4"
	"github.com/backchannel/backchannel/internal/media"
)

// MIME types of the codecs the segmenter takes (compared case-insensitively).
const (
	MimeH264 = "video/H264"
	MimeH265 = "video/H265"
	MimeOpus = "audio/opus"
	MimeAAC  = "audio/mpeg4-generic"
)

// Defaults of Config (mediamtx's LL-HLS defaults are 1 s segments and
// 200 ms parts).
const (
	DefaultPartTarget    = 200 * time.Millisecond
	DefaultSegmentTarget = time.Second
	DefaultQueue         = 2048 // packets waiting for the segmenter's goroutine
)

// Errors given to Output.End.
var (
	// ErrClosed: Close was called.
	ErrClosed = errors.New("cmaf: segmenter closed")
	// ErrNoSupportedTrack: the stream has no track this package can mux.
	ErrNoSupportedTrack = errors.New("cmaf: no H.264, H.265, Opus or AAC track")
)

// Config tunes a Segmenter.
type Config struct {
	PartTarget    time.Duration // DefaultPartTarget when 0
	SegmentTarget time.Duration // DefaultSegmentTarget when 0
	// NoParts makes every segment a single fragment (recordings): parts
	// are still reported, one per segment.
	NoParts bool
	Queue   int // DefaultQueue when 0
	Logger  *slog.Logger
}

// Init is an init segment and what a playlist says about it.
type Init struct {
	ID        int // 1 for the first, +1 for each parameter change
	Data      []byte
	Codecs    string // RFC 6381 list for CODECS=
	Width     int
	Height    int
	FrameRate float64 // from the SPS, 0 when it does not say
	Video     bool
	Audio     bool
}

// Part is one fragment (moof+mdat). Parts follow each other without gaps
// on the segmenter's timeline; a segment is the parts from one with
// SegmentStart to the next one with SegmentEnd.
type Part struct {
	Init         int // ID of the init segment the part needs
	Data         []byte
	Start        time.Duration // on the timeline (decode time of the first video sample)
	Duration     time.Duration
	Independent  bool      // starts with a keyframe in every video track
	SegmentStart bool      // first part of a segment
	SegmentEnd   bool      // last part of its segment
	Wall         time.Time // wall-clock time of Start (EXT-X-PROGRAM-DATE-TIME)
	// Arrived is when the newest packet muxed into the part was received:
	// what a latency measurement starts from.
	Arrived time.Time
}

// Output receives what a Segmenter produces, from its goroutine, in order:
// an Init before the first Part that names it. End is called once, last.
type Output interface {
	WriteInit(Init)
	WritePart(Part)
	End(reason error)
}

// Stats counts what a Segmenter dropped or made.
type Stats struct {
	PacketsQueueFull uint64 // dropped because the goroutine fell behind
	UnitsDropped     uint64 // access units lost to packet loss, bad timestamps, waiting for a keyframe
	Parts            uint64
	Segments         uint64
}

// Segmenter is the pipeline of one stream.
type Segmenter struct {
	cfg    Config
	out    Output
	log    *slog.Logger
	origin time.Time // timeline zero

	in       chan item
	detach   chan struct{}
	detachMu sync.Once
	reason   error
	stop     chan struct{}
	done     chan struct{}
	closeMu  sync.Once
	removes  []func()

	queueFull atomic.Uint64
	dropped   atomic.Uint64
	parts     atomic.Uint64
	segments  atomic.Uint64

	// Goroutine state.
	tracks     []*track
	video      *track // nil for audio-only
	mux        *fmp4.Muxer
	muxStart   time.Duration // where the current init's first segment began
	initID     int
	partStart  time.Duration
	segStart   time.Duration
	newSegment bool // the next part starts a segment
	started    bool // the first video keyframe (or audio sample) went in
	lastKeyReq time.Time
	arrived    time.Time
}

type item struct {
	track int
	pkt   rtp.Packet
	at    time.Time
}

// Start attaches the segmenter to the stream's current tracks. It fails
// with ErrNoSupportedTrack when none can be muxed, or with the registry's
// error when the stream has ended.
func Start(st *media.Stream, cfg Config, out Output) (*Segmenter, error) {
	if cfg.PartTarget <= 0 {
		cfg.PartTarget = DefaultPartTarget
	}
	if cfg.SegmentTarget <= 0 {
		cfg.SegmentTarget = DefaultSegmentTarget
	}
	if cfg.SegmentTarget < cfg.PartTarget {
		cfg.SegmentTarget = cfg.PartTarget
	}
	if cfg.Queue <= 0 {
		cfg.Queue = DefaultQueue
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Segmenter{
		cfg: cfg, out: out, log: cfg.Logger.With("stream", st.Name()),
		// The margin keeps decode times of the first frames, extrapolated
		// backwards by the DTS window, above zero.
		origin: time.Now().Add(-10 * time.Second),
		in:     make(chan item, cfg.Queue),
		detach: make(chan struct{}),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	var skipped []string
	for _, mt := range st.Tracks() {
		tr, err := newTrack(mt, len(s.tracks))
		if err != nil {
			skipped = append(skipped, fmt.Sprintf("%s: %v", mt.Codec().MimeType, err))
			continue
		}
		if tr.video && s.video != nil {
			continue
		}
		if tr.video {
			s.video = tr
		}
		s.tracks = append(s.tracks, tr)
	}
	if len(s.tracks) == 0 {
		if len(skipped) > 0 {
			return nil, fmt.Errorf("%w (%s)", ErrNoSupportedTrack, strings.Join(skipped, "; "))
		}
		return nil, ErrNoSupportedTrack
	}
	if len(skipped) > 0 {
		s.log.Info("cmaf: tracks left out", "tracks", skipped)
	}
	for _, tr := range s.tracks {
		remove, err := tr.media.AddSink(&sink{s: s, idx: tr.idx})
		if err != nil {
			for _, r := range s.removes {
				r()
			}
			return nil, err
		}
		s.removes = append(s.removes, remove)
	}
	if s.video != nil {
		s.requestKeyframe(time.Now())
	}
	go s.run()
	return s, nil
}

// Origin is the wall-clock time of the timeline's zero.
func (s *Segmenter) Origin() time.Time { return s.origin }

// Stats returns the counters so far.
func (s *Segmenter) Stats() Stats {
	return Stats{PacketsQueueFull: s.queueFull.Load(), UnitsDropped: s.dropped.Load(),
		Parts: s.parts.Load(), Segments: s.segments.Load()}
}

// Done is closed once Output.End has returned.
func (s *Segmenter) Done() <-chan struct{} { return s.done }

// Close detaches the sinks, flushes what is queued as a last part, calls
// Output.End(ErrClosed) unless the stream ended first, and waits for the
// goroutine.
func (s *Segmenter) Close() {
	s.closeMu.Do(func() {
		for _, r := range s.removes {
			r()
		}
		close(s.stop)
	})
	<-s.done
}

func (s *Segmenter) detached(reason error) {
	s.detachMu.Do(func() {
		s.reason = reason
		close(s.detach)
	})
}

// sink is the media.Sink of one track: it copies each packet (the
// depacketizers keep references to payloads) onto the goroutine's queue,
// never blocking the publisher.
type sink struct {
	s   *Segmenter
	idx int
}

func (k *sink) WriteRTP(p *media.Packet) {
	it := item{track: k.idx, at: time.Now()}
	it.pkt.Header = p.Header
	it.pkt.Payload = append([]byte(nil), p.Payload...)
	select {
	case k.s.in <- it:
	default:
		k.s.queueFull.Add(1)
	}
}

func (k *sink) WriteSenderReport(media.SenderReport) {}

func (k *sink) Detached(reason error) { k.s.detached(reason) }

func (s *Segmenter) run() {
	defer close(s.done)
	reason := ErrClosed
loop:
	for {
		select {
		case it := <-s.in:
			s.handle(it)
		case <-s.detach:
			// Take what was queued before the track let go.
			for {
				select {
				case it := <-s.in:
					s.handle(it)
					continue
				default:
				}
				break
			}
			reason = s.reason
			break loop
		case <-s.stop:
			break loop
		}
	}
	s.finish()
	for _, tr := range s.tracks {
		lost, late := tr.lossStats()
		s.log.Debug("cmaf: track done", "codec", tr.media.Codec().MimeType, "lost", lost, "late", late, "padding", tr.seqShift)
	}
	s.out.End(reason)
}

// finish flushes the muxer into a last part that ends its segment.
func (s *Segmenter) finish() {
	if s.mux == nil {
		return
	}
	data, info, err := s.mux.Flush()
	if err != nil {
		s.log.Warn("cmaf: last fragment lost", "err", err)
		return
	}
	if data == nil {
		return // nothing queued (audio only): outputs close what they hold at End
	}
	end := s.partStart
	for _, t := range info.Tracks {
		end = max(end, fmp4.TicksToDuration(t.EndDTS, t.TimeScale))
	}
	s.emit(data, info, end, true)
}

func (s *Segmenter) handle(it item) {
	tr := s.tracks[it.track]
	s.arrived = it.at
	if len(it.pkt.Payload) == 0 {
		// Padding-only packets (bandwidth probes from browsers without RTX)
		// share the media's sequence numbers: take them out of the
		// numbering so the depacketizer sees neither a gap nor a bogus
		// NAL unit.
		tr.seqShift++
		return
	}
	it.pkt.SequenceNumber -= tr.seqShift
	units, err := tr.push(&it.pkt)
	if err != nil {
		s.drop(err.Error())
		if tr.video && errors.Is(err, errLoss) {
			// A lost reference frame damages the picture until the next
			// keyframe: ask for one (rate-limited by the track).
			s.requestKeyframe(it.at)
		}
	}
	for i := range units {
		s.unit(tr, &units[i], it.at)
	}
}

// unit muxes one access unit.
func (s *Segmenter) unit(tr *track, u *unit, at time.Time) {
	if !tr.based {
		// The track's timeline position: its first unit is placed at its
		// arrival time. Tracks of one publisher are captured together, so
		// arrival aligns them within the network's jitter.
		tr.base = durationToTicks(at.Sub(s.origin), tr.clock) - u.pts
		tr.based = true
	}
	dts, pts := u.dts+tr.base, u.pts+tr.base
	if tr.video {
		s.videoUnit(tr, u, dts, pts, at)
	} else {
		s.audioUnit(tr, u, dts, at)
	}
}

func (s *Segmenter) videoUnit(tr *track, u *unit, dts, pts int64, at time.Time) {
	t := fmp4.TicksToDuration(dts, tr.clock)
	if u.key {
		// Parameter sets that change mid-stream (a WebRTC encoder adapting
		// its resolution) stay in band: samples keep the SPS/PPS that
		// differ from the init segment's, and decoders (MSE, ffmpeg) switch
		// at the keyframe. A new init with a discontinuity would break
		// players that cannot change a SourceBuffer's configuration, and
		// ffmpeg's HLS reader.
		tr.params.update(u.nalus)
		if s.mux == nil {
			if err := s.newMuxer(t); err != nil {
				s.log.Warn("cmaf: cannot build an init segment", "err", err)
				s.drop("cannot build init")
				return
			}
		}
	}
	if s.mux == nil {
		s.drop("waiting for a keyframe")
		if !u.key {
			s.requestKeyframe(at)
		}
		return
	}
	if dts < 0 || (tr.written && dts <= tr.lastDTS) {
		s.drop("decode time not increasing")
		return
	}
	var frame time.Duration
	if tr.written {
		frame = fmp4.TicksToDuration(dts-tr.lastDTS, tr.clock)
	}
	data, sync := sampleData(s.videoCodec(), u.nalus)
	if len(data) == 0 {
		s.drop("empty sample")
		return
	}
	if err := s.mux.WriteSample(tr.id, fmp4.TimedSample{DTS: dts, PTS: pts, Sync: sync, Data: data}); err != nil {
		s.fail(err)
		return
	}
	tr.written, tr.lastDTS = true, dts
	if !s.started {
		s.started = true
		s.partStart, s.segStart, s.newSegment = t, t, true
		return
	}
	segDur := t - s.segStart
	switch {
	case sync && segDur >= s.cfg.SegmentTarget*9/10:
		s.cut(t, true)
	case sync && !s.cfg.NoParts && t > s.partStart:
		// A keyframe inside a segment (asked for by a viewer) starts its
		// own part, so players can begin there.
		s.cut(t, false)
	case !s.cfg.NoParts && t-s.partStart+frame/2 >= s.cfg.PartTarget:
		s.cut(t, false)
	}
	if !sync && segDur >= s.cfg.SegmentTarget && at.Sub(s.lastKeyReq) >= s.cfg.SegmentTarget {
		// WebRTC encoders send keyframes only when asked.
		s.requestKeyframe(at)
	}
}

func (s *Segmenter) audioUnit(tr *track, u *unit, dts int64, at time.Time) {
	if s.video != nil && !s.started {
		return // segments start with video
	}
	if s.mux == nil {
		if s.video != nil {
			return
		}
		if err := s.newMuxer(fmp4.TicksToDuration(dts, tr.clock)); err != nil {
			s.log.Warn("cmaf: cannot build an init segment", "err", err)
			return
		}
	}
	t := fmp4.TicksToDuration(dts, tr.clock)
	if dts < 0 || (tr.written && dts <= tr.lastDTS) || (s.video != nil && t < s.segStartOfMux()) {
		s.drop("audio before video or time not increasing")
		return
	}
	if err := s.mux.WriteSample(tr.id, fmp4.TimedSample{DTS: dts, PTS: dts, Duration: u.duration, Sync: true, Data: u.data}); err != nil {
		s.fail(err)
		return
	}
	tr.written, tr.lastDTS = true, dts
	if s.video != nil {
		return
	}
	end := fmp4.TicksToDuration(dts+int64(u.duration), tr.clock)
	if !s.started {
		s.started = true
		s.partStart, s.segStart, s.newSegment = t, t, true
	}
	switch {
	case end-s.segStart >= s.cfg.SegmentTarget:
		s.cut(end, true)
	case !s.cfg.NoParts && end-s.partStart >= s.cfg.PartTarget:
		s.cut(end, false)
	}
}

// segStartOfMux is where the current muxer's first segment began: audio
// before it is dropped so a fresh init starts with video.
func (s *Segmenter) segStartOfMux() time.Duration { return s.muxStart }

// cut emits the queued samples before end as a part.
func (s *Segmenter) cut(end time.Duration, segEnd bool) {
	data, info, err := s.mux.Fragment(end)
	if err != nil {
		s.fail(err)
		return
	}
	if data == nil {
		return
	}
	s.emit(data, info, end, segEnd)
}

func (s *Segmenter) emit(data []byte, info *fmp4.FragmentInfo, end time.Duration, segEnd bool) {
	p := Part{
		Init:         s.initID,
		Data:         data,
		Start:        s.partStart,
		Duration:     max(end-s.partStart, 0),
		Independent:  info.Independent(),
		SegmentStart: s.newSegment,
		SegmentEnd:   segEnd,
		Wall:         s.origin.Add(s.partStart),
		Arrived:      s.arrived,
	}
	s.newSegment = false
	s.partStart = end
	if segEnd {
		s.segStart, s.newSegment = end, true
		s.segments.Add(1)
	}
	s.parts.Add(1)
	s.out.WritePart(p)
}

// newMuxer starts a new init segment at timeline time t, ending the
// current segment (a parameter change is a discontinuity).
func (s *Segmenter) newMuxer(t time.Duration) error {
	var tracks []fmp4.Track
	for _, tr := range s.tracks {
		c, err := tr.fmp4Codec()
		if err != nil {
			if tr.video {
				return err
			}
			continue // audio that cannot be described yet is left out
		}
		tracks = append(tracks, fmp4.Track{ID: tr.id, TimeScale: tr.clock, Codec: c})
	}
	m, err := fmp4.NewMuxer(tracks...)
	if err != nil {
		return err
	}
	initData, err := m.Init()
	if err != nil {
		return err
	}
	if s.mux != nil {
		// Close the old init's segment with what it holds.
		s.finish()
	}
	s.mux = m
	s.muxStart = t
	for _, tr := range s.tracks {
		tr.written = false
	}
	s.initID++
	in := Init{ID: s.initID, Data: initData, Codecs: fmp4.Codecs(m.Tracks())}
	for _, tr := range m.Tracks() {
		if tr.Codec.IsVideo() {
			in.Video = true
			in.Width, in.Height, in.FrameRate = videoInfo(tr.Codec)
		} else {
			in.Audio = true
		}
	}
	s.started = false
	s.out.WriteInit(in)
	return nil
}

func (s *Segmenter) videoCodec() fmp4.Codec {
	for _, t := range s.mux.Tracks() {
		if t.Codec.IsVideo() {
			return t.Codec
		}
	}
	return nil
}

// fail drops the muxer after an error it cannot recover from (a queue
// overflow, a timestamp it refuses); the next keyframe starts afresh.
func (s *Segmenter) fail(err error) {
	s.log.Warn("cmaf: muxer reset", "err", err)
	if s.mux != nil {
		s.finish()
	}
	s.mux = nil
	s.started = false
	for _, tr := range s.tracks {
		tr.written = false
	}
}

func (s *Segmenter) drop(why string) {
	if n := s.dropped.Add(1); n <= 20 {
		s.log.Debug("cmaf: unit dropped", "why", why, "n", n)
	}
}

func (s *Segmenter) requestKeyframe(now time.Time) {
	if s.video == nil {
		return
	}
	s.lastKeyReq = now
	s.video.media.RequestKeyframe()
}

func videoInfo(c fmp4.Codec) (w, h int, fps float64) {
	switch v := c.(type) {
	case *fmp4.H264:
		if sps := v.ParsedSPS(); sps != nil {
			return sps.Width, sps.Height, sps.FrameRate()
		}
	case *fmp4.H265:
		if sps := v.ParsedSPS(); sps != nil {
			return sps.Width, sps.Height, sps.FrameRate()
		}
	}
	return 0, 0, 0
}

func durationToTicks(d time.Duration, clock uint32) int64 {
	sec := int64(d / time.Second)
	rem := int64(d % time.Second)
	return sec*int64(clock) + rem*int64(clock)/int64(time.Second)
}
