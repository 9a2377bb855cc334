package media

import (
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// Errors reported to writers and sinks.
var (
	// ErrReplaced: the publication was taken over by a newer publisher or
	// has ended; its writes are dropped.
	ErrReplaced = errors.New("media: publication replaced or closed")
	// ErrCodecChanged: a new publisher uses a codec the track's viewers did
	// not negotiate; they must reconnect.
	ErrCodecChanged = errors.New("media: publisher changed the track's codec")
	// ErrStreamEnded: the stream stayed offline past its grace period, or
	// the registry closed.
	ErrStreamEnded = errors.New("media: stream ended")
)

// Sink receives a track's outgoing packets: a WHEP viewer, an HLS muxer, a
// relay. Calls for one track come from one goroutine at a time, in order,
// and must not block: a slow sink drops packets rather than stall the
// publisher and every other sink.
type Sink interface {
	// WriteRTP forwards one packet. p is valid only during the call.
	WriteRTP(p *Packet)
	// WriteSenderReport forwards the publisher's sender report, its RTP
	// timestamp already mapped to the outgoing timeline.
	WriteSenderReport(sr SenderReport)
	// Detached says the track stopped feeding this sink (codec change,
	// stream end). It is called once, without locks held, and no other call
	// follows it.
	Detached(reason error)
}

// Flusher is a Sink that gathers the packets it is given to send them
// together (e.g. one system call for every viewer of a packet): the track
// calls Flush once a packet went to every sink. Flush is called from the
// goroutine that calls WriteRTP.
type Flusher interface {
	Flush()
}

// SenderReport is the part of a publisher's RTCP sender report that sinks
// rewrite for their own receivers: the wall clock (NTP) and the matching
// RTP timestamp on the track's outgoing timeline.
type SenderReport struct {
	NTPTime uint64
	RTPTime uint32
}

// KeyframeInfo locates the most recent keyframe start sent on a track.
type KeyframeInfo struct {
	SequenceNumber uint16
	Timestamp      uint32
	At             time.Time
}

// Track is one media track of a stream. Its identity (outgoing SSRC,
// sequence and timestamp timelines) outlives publishers: a publisher
// replacing another feeds the same Track, so attached sinks continue.
type Track struct {
	stream *Stream
	kind   Kind
	ssrc   uint32
	codec  atomic.Pointer[Codec]
	ring   *Ring

	// wmu serializes the write path: munging, ring insertion and fan-out.
	wmu      sync.Mutex
	gen      uint64 // publication allowed to write; 0 = none
	munger   *Munger
	detector startDetector
	waitKey  bool // drop until a decoder start point (new video source)
	params   paramWatcher
	scratch  Packet
	hdr      rtp.Header
	win      rateWindow

	sinkMu sync.Mutex
	sinks  atomic.Pointer[[]Sink]
	ended  bool // under sinkMu: no more sinks accepted

	source  atomic.Pointer[Source]
	limiter keyframeLimiter
	lastKey atomic.Pointer[KeyframeInfo]

	paramSets atomic.Pointer[ParameterSets]
	format    atomic.Pointer[VideoFormat]

	// GOP cache (video): the packets since the last decoder start point.
	gop             atomic.Pointer[gop]
	cacheGOP        bool   // the codec has decoder start points
	frame           uint32 // writer only: track-wide index of the newest frame
	frameTS         uint32
	anyFrame        bool
	newestAt        atomic.Uint64         // newest frame index << 32 | its timestamp
	catchUps        map[*catchUp]struct{} // under sinkMu
	catchUpsStarted atomic.Uint64

	packets atomic.Uint64
	bytes   atomic.Uint64
	fps     atomic.Uint64 // float64 bits
	kbps    atomic.Uint64 // float64 bits
}

func newTrack(s *Stream, c Codec, ssrc uint32, seq uint16, ts uint32) *Track {
	t := &Track{stream: s, kind: c.Kind(), ssrc: ssrc}
	t.codec.Store(&c)
	size := DefaultAudioRingSize
	if t.kind == KindVideo {
		size = DefaultVideoRingSize
	}
	t.ring = NewRing(size)
	t.munger = NewMunger(c.ClockRate, seq, ts)
	t.detector = newStartDetector(c)
	t.cacheGOP = t.kind == KindVideo && t.detector.keyed()
	t.resetParams(c)
	empty := []Sink{}
	t.sinks.Store(&empty)
	t.limiter.init(KeyframeRequestInterval, t.sendKeyframeRequest)
	return t
}

// Kind is the track's media kind.
func (t *Track) Kind() Kind { return t.kind }

// Codec is the track's current codec.
func (t *Track) Codec() Codec { return *t.codec.Load() }

// SSRC is the track's outgoing SSRC, stable for the stream's lifetime.
// Sinks that speak to peers substitute the SSRC negotiated with each peer.
func (t *Track) SSRC() uint32 { return t.ssrc }

// Stream is the stream the track belongs to.
func (t *Track) Stream() *Stream { return t.stream }

// ParameterSets returns the track's latest decoder parameter sets (H.264,
// H.265): the publisher's SDP ones, replaced by those seen in band. The
// slices must not be modified.
func (t *Track) ParameterSets() ParameterSets {
	if p := t.paramSets.Load(); p != nil {
		return *p
	}
	return ParameterSets{}
}

// VideoFormat returns what the track's latest SPS says; ok is false before
// an SPS was seen (or for codecs without one).
func (t *Track) VideoFormat() (VideoFormat, bool) {
	if f := t.format.Load(); f != nil {
		return *f, true
	}
	return VideoFormat{}, false
}

// resetParams starts following the parameter sets of a new codec. Called
// with the write lock held or before the track is shared.
func (t *Track) resetParams(c Codec) {
	t.params = newParamWatcher(c)
	t.paramSets.Store(t.params.snapshot())
	t.format.Store(t.params.format())
}

// LastKeyframe returns where the most recent keyframe start went out.
func (t *Track) LastKeyframe() (KeyframeInfo, bool) {
	k := t.lastKey.Load()
	if k == nil {
		return KeyframeInfo{}, false
	}
	return *k, true
}

// AddSink attaches a sink; it receives packets from the next one on.
// remove detaches it (idempotent, and Detached is not called then).
// AddSink fails with ErrStreamEnded once the stream is gone.
func (t *Track) AddSink(s Sink) (remove func(), err error) {
	t.sinkMu.Lock()
	defer t.sinkMu.Unlock()
	if t.ended {
		return nil, ErrStreamEnded
	}
	old := *t.sinks.Load()
	next := make([]Sink, len(old), len(old)+1)
	copy(next, old)
	next = append(next, s)
	t.sinks.Store(&next)
	return func() { t.removeSink(s) }, nil
}

func (t *Track) removeSink(s Sink) bool {
	t.sinkMu.Lock()
	defer t.sinkMu.Unlock()
	old := *t.sinks.Load()
	for i, x := range old {
		if x == s {
			next := make([]Sink, 0, len(old)-1)
			next = append(next, old[:i]...)
			next = append(next, old[i+1:]...)
			t.sinks.Store(&next)
			return true
		}
	}
	return false
}

// SinkCount is the number of attached sinks, those still catching up
// included.
func (t *Track) SinkCount() int {
	t.sinkMu.Lock()
	defer t.sinkMu.Unlock()
	return len(*t.sinks.Load()) + len(t.catchUps)
}

// takeSinks detaches every sink and returns them, so the caller can tell
// them why outside of locks. With end set the track accepts no new sinks.
func (t *Track) takeSinks(end bool) []Sink {
	t.sinkMu.Lock()
	defer t.sinkMu.Unlock()
	if end {
		t.ended = true
	}
	old := *t.sinks.Load()
	empty := []Sink{}
	t.sinks.Store(&empty)
	for c := range t.catchUps {
		delete(t.catchUps, c)
		close(c.stop)
		old = append(old, catchUpSink{c})
	}
	return old
}

// catchUpSink is a detached sink that was still catching up: it is told
// only once its catch-up goroutine has stopped writing to it.
type catchUpSink struct{ c *catchUp }

func (s catchUpSink) WriteRTP(*Packet)               {}
func (s catchUpSink) WriteSenderReport(SenderReport) {}
func (s catchUpSink) Detached(reason error) {
	<-s.c.done
	s.c.sink.Detached(reason)
}

// CatchUps is the number of sinks started from the GOP cache so far.
func (t *Track) CatchUps() uint64 { return t.catchUpsStarted.Load() }

func (t *Track) fastStart() FastStart {
	if f := t.stream.reg.fast.Load(); f != nil {
		return *f
	}
	return FastStart{}.withDefaults()
}

// newest returns the track-wide index and timestamp of the newest frame
// sent.
func (t *Track) newest() (frame, ts uint32) {
	v := t.newestAt.Load()
	return uint32(v >> 32), uint32(v)
}

// cache adds an outgoing packet to the GOP cache; a decoder start point
// begins a new GOP. Called with the write lock held.
func (t *Track) cache(p *Packet, now time.Time) {
	if !t.anyFrame || p.Header.Timestamp != t.frameTS {
		if t.anyFrame {
			t.frame++
		}
		t.frameTS, t.anyFrame = p.Header.Timestamp, true
	}
	t.newestAt.Store(uint64(t.frame)<<32 | uint64(p.Header.Timestamp))
	fs := t.fastStart()
	if fs.Disabled {
		t.gop.Store(nil)
		return
	}
	if p.Keyframe {
		g := newGOP(now)
		if old := t.gop.Load(); old != nil {
			old.link(g)
		}
		t.gop.Store(g)
	}
	if g := t.gop.Load(); g != nil && !g.append(p, t.frame, fs.MaxBytes) {
		t.gop.Store(nil) // outgrew its bound: nothing to offer until the next keyframe
	}
}

// Retransmit looks the outgoing packet seq up in the shared ring and, if
// still there, calls fn with it (under the ring's read lock: write it to one
// peer and return). It reports whether the packet was found.
func (t *Track) Retransmit(seq uint16, fn func(*Packet)) bool {
	return t.ring.Get(seq, fn)
}

// RequestKeyframe asks the current publisher for a keyframe, at most once
// per KeyframeRequestInterval per track; requests inside the interval are
// folded into one sent when it ends, unless a keyframe went out meanwhile.
// It reports whether a request went upstream now.
func (t *Track) RequestKeyframe() bool {
	if t.kind != KindVideo {
		return false
	}
	return t.limiter.request()
}

// KeyframeRequestInterval is the minimum spacing of keyframe requests sent
// to a publisher for one track.
const KeyframeRequestInterval = 500 * time.Millisecond

func (t *Track) sendKeyframeRequest() {
	if src := t.source.Load(); src != nil {
		(*src).RequestKeyframe(t.kind)
	}
}

// attach hands the track to publication gen (0: to nobody). Called with the
// registry lock held.
func (t *Track) attach(gen uint64, src Source, c *Codec) {
	t.wmu.Lock()
	t.gen = gen
	t.munger.Reset()
	if c != nil {
		if !t.Codec().Compatible(*c) {
			t.gop.Store(nil) // the cached pictures are of another codec
		}
		t.codec.Store(c)
		t.detector = newStartDetector(*c)
		t.cacheGOP = t.kind == KindVideo && t.detector.keyed()
		t.resetParams(*c)
	}
	t.detector.reset()
	// A new video source is joined at a decoder start point, so viewers
	// never see the tail of one encoder's GOP glued to another's deltas.
	t.waitKey = t.kind == KindVideo && t.detector.keyed()
	t.win = rateWindow{}
	t.wmu.Unlock()
	if src != nil {
		t.source.Store(&src)
	} else {
		t.source.Store(nil)
		t.fps.Store(0)
		t.kbps.Store(0)
	}
}

// write is the hot path: one publisher packet to every sink.
func (t *Track) write(gen uint64, p *rtp.Packet) error {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if gen != t.gen {
		return ErrReplaced
	}
	now := time.Now()
	key := t.detector.start(p.Timestamp, p.Payload)
	if changed, sps := t.params.scan(p.Payload); changed {
		t.paramSets.Store(t.params.snapshot())
		if sps {
			t.format.Store(t.params.format())
		}
	}
	if t.waitKey {
		if !key {
			t.limiter.request()
			return nil
		}
		t.waitKey = false
	}
	seq, ts, ok := t.munger.Munge(p.SequenceNumber, p.Timestamp, now)
	if !ok {
		return nil
	}
	h := &t.hdr
	*h = p.Header
	h.SSRC, h.SequenceNumber, h.Timestamp = t.ssrc, seq, ts
	// Extension IDs are negotiated per peer, and contributing sources only
	// matter to mixers: neither survives forwarding.
	h.Extension, h.ExtensionProfile, h.Extensions = false, 0, nil
	h.CSRC = nil
	if !h.Padding {
		h.PaddingSize = 0
	}

	out := t.ring.Put(h, p.Payload, key)
	if out == nil {
		t.scratch = Packet{Header: *h, Payload: p.Payload, Keyframe: key}
		out = &t.scratch
	}
	if key {
		t.lastKey.Store(&KeyframeInfo{SequenceNumber: seq, Timestamp: ts, At: now})
		t.limiter.keyframeSent(now)
	}
	if t.cacheGOP {
		t.cache(out, now)
	}
	t.packets.Add(1)
	t.bytes.Add(uint64(len(p.Payload)))
	t.win.add(now, len(p.Payload), p.Marker, t)

	sinks := *t.sinks.Load()
	for _, s := range sinks {
		s.WriteRTP(out)
	}
	for _, s := range sinks {
		if f, ok := s.(Flusher); ok {
			f.Flush()
		}
	}
	return nil
}

func (t *Track) writeSenderReport(gen uint64, sr *rtcp.SenderReport) error {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if gen != t.gen {
		return ErrReplaced
	}
	if sr.PacketCount == 0 {
		// Sent before the publisher's first packet: its RTP time is
		// extrapolated from nothing (pion's report interceptor does this).
		return nil
	}
	ts, ok := t.munger.Timestamp(sr.RTPTime)
	if !ok {
		return nil
	}
	out := SenderReport{NTPTime: sr.NTPTime, RTPTime: ts}
	for _, s := range *t.sinks.Load() {
		s.WriteSenderReport(out)
	}
	return nil
}

func (t *Track) info() TrackInfo {
	c := t.Codec()
	info := TrackInfo{
		Kind:        string(t.kind),
		Codec:       c.MimeType,
		ClockRate:   c.ClockRate,
		Channels:    c.Channels,
		SampleRate:  c.SampleRate(),
		Fmtp:        c.Fmtp,
		FPS:         round1(math.Float64frombits(t.fps.Load())),
		BitrateKbps: round1(math.Float64frombits(t.kbps.Load())),
	}
	if f, ok := t.VideoFormat(); ok {
		info.Width, info.Height = f.Width, f.Height
		// The declared rate is exact; the measured one only fills in for
		// encoders that declare none (browsers).
		if f.FrameRate > 0 {
			info.FPS = round1(f.FrameRate)
		}
	}
	return info
}

func (t *Track) close() { t.limiter.close() }

func round1(v float64) float64 { return math.Round(v*10) / 10 }

// rateWindow measures frame rate and bitrate over roughly one-second
// windows on the write path (no timers, no extra goroutine).
type rateWindow struct {
	start  time.Time
	frames int
	bytes  int
}

func (w *rateWindow) add(now time.Time, n int, marker bool, t *Track) {
	if w.start.IsZero() {
		w.start = now
	}
	w.bytes += n
	if marker {
		w.frames++
	}
	if d := now.Sub(w.start); d >= time.Second {
		secs := d.Seconds()
		if t.kind == KindVideo {
			t.fps.Store(math.Float64bits(float64(w.frames) / secs))
		}
		t.kbps.Store(math.Float64bits(float64(w.bytes) * 8 / 1000 / secs))
		*w = rateWindow{start: now}
	}
}

// keyframeLimiter spaces keyframe requests at least interval apart and
// folds the requests made in between into one trailing request.
type keyframeLimiter struct {
	interval time.Duration
	send     func()

	mu           sync.Mutex
	last         time.Time // last request sent
	pendingSince time.Time // first folded request, zero if none
	timer        *time.Timer
	closed       bool
}

func (l *keyframeLimiter) init(interval time.Duration, send func()) {
	l.interval, l.send = interval, send
}

func (l *keyframeLimiter) request() bool {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return false
	}
	now := time.Now()
	if since := now.Sub(l.last); l.last.IsZero() || since >= l.interval {
		l.last = now
		l.mu.Unlock()
		l.send()
		return true
	}
	if l.pendingSince.IsZero() {
		l.pendingSince = now
		wait := l.interval - now.Sub(l.last)
		if l.timer == nil {
			l.timer = time.AfterFunc(wait, l.trailing)
		} else {
			l.timer.Reset(wait)
		}
	}
	l.mu.Unlock()
	return false
}

func (l *keyframeLimiter) trailing() {
	l.mu.Lock()
	if l.closed || l.pendingSince.IsZero() {
		l.mu.Unlock()
		return
	}
	l.pendingSince = time.Time{}
	l.last = time.Now()
	l.mu.Unlock()
	l.send()
}

// keyframeSent cancels a folded request that the keyframe now leaving has
// already satisfied.
func (l *keyframeLimiter) keyframeSent(at time.Time) {
	l.mu.Lock()
	if !l.pendingSince.IsZero() && at.After(l.pendingSince) {
		l.pendingSince = time.Time{}
		if l.timer != nil {
			l.timer.Stop()
		}
	}
	l.mu.Unlock()
}

func (l *keyframeLimiter) close() {
	l.mu.Lock()
	l.closed = true
	if l.timer != nil {
		l.timer.Stop()
	}
	l.mu.Unlock()
}
