// Package media is the one internal stream model shared by every ingest
// protocol (WHIP, RTSP) and every egress (WHEP, LL-HLS, RTSP read, relay): a
// registry of live streams, each a set of tracks that fan RTP packets out to
// sinks with stable SSRC, sequence numbers and timestamps across publisher
// changes.
//
// A publisher calls Registry.Publish with its tracks' codecs and a Source
// (how to ask it for keyframes, how to end it) and writes packets through
// the returned Publication. Packets are never depacketized: each track
// rewrites sequence number and timestamp once (the Munger), keeps a copy in
// a shared ring for retransmissions, and hands the same packet to every
// attached Sink. A newer Publish for the same stream takes the old one over
// without an offline/online flap; sinks stay attached unless the codec
// changed.
package media

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// TrackInfo describes one track of a live stream, as listed by the registry.
type TrackInfo struct {
	Kind        string  `json:"kind"`  // "video" or "audio"
	Codec       string  `json:"codec"` // MIME type, e.g. "video/H264"
	ClockRate   uint32  `json:"clock_rate"`
	Channels    uint16  `json:"channels,omitempty"`
	SampleRate  int     `json:"sample_rate,omitempty"` // audio
	Fmtp        string  `json:"fmtp,omitempty"`
	Width       int     `json:"width,omitempty"`  // video, from the SPS
	Height      int     `json:"height,omitempty"` // video, from the SPS
	FPS         float64 `json:"fps,omitempty"`    // declared by the SPS, else measured
	BitrateKbps float64 `json:"bitrate_kbps,omitempty"`
}

// StreamInfo describes a live stream.
type StreamInfo struct {
	Name      string      `json:"name"`
	Protocol  string      `json:"protocol"`         // "whip", "rtsp" or "rtsp-pull"
	Publisher string      `json:"publisher"`        // publisher's remote address (the source URL's host for pulls)
	KeyID     string      `json:"key_id,omitempty"` // id of the stream key it published with
	Node      string      `json:"node"`             // ingest node id
	StartedAt time.Time   `json:"started_at"`
	Tracks    []TrackInfo `json:"tracks"`
}

// Event is a change of a stream's on-air state. Live events repeat, with
// updated Info, when a new publisher takes a live stream over; there is no
// offline event in between.
type Event struct {
	Stream string
	Live   bool
	Info   StreamInfo
}

// Source is the publisher side of a publication, as the stream sees it.
type Source interface {
	// RequestKeyframe asks the publisher for a keyframe on its track of
	// the given kind (e.g. with an RTCP PLI). It must not block for long,
	// and it may be called from inside the publisher's own
	// TrackWriter.WriteRTP (a new source's first frames are not a
	// keyframe): it must not take a lock held around that call.
	RequestKeyframe(kind Kind)
	// Close ends the publisher's session: a newer publisher took the
	// stream over, or the registry was told to end it (EndPublishers, e.g.
	// its stream key was revoked). It is called without registry locks and
	// must not wait for the publisher's own goroutines to finish writing.
	Close() error
}

// PublisherInfo says who publishes.
type PublisherInfo struct {
	Protocol string // ProtocolWHIP, ProtocolRTSP, ProtocolRTSPPull
	Remote   string // remote address
	KeyID    string // the stream key it was authorized with, if any
}

// DefaultOfflineGrace is how long a stream whose publisher left keeps its
// tracks and sinks, waiting for a publisher to come back.
const DefaultOfflineGrace = 10 * time.Second

// Registry holds the streams of one ingest node.
type Registry struct {
	node string

	mu      sync.Mutex
	streams map[string]*Stream
	grace   time.Duration
	gen     uint64
	closed  bool

	fast atomic.Pointer[FastStart]

	subsMu sync.Mutex
	subs   map[int]func(Event)
	nextID int

	demandMu       sync.Mutex
	demand         map[string]onDemand
	demandNext     uint64
	demandFallback *func(name string) bool

	evMu     sync.Mutex
	queue    []Event
	draining bool
}

// NewRegistry returns an empty registry for the ingest node with the given id.
func NewRegistry(node string) *Registry {
	return &Registry{
		node:    node,
		streams: map[string]*Stream{},
		grace:   DefaultOfflineGrace,
		subs:    map[int]func(Event){},
		demand:  map[string]onDemand{},
	}
}

// Node is the id of the ingest node the registry belongs to.
func (r *Registry) Node() string { return r.node }

// SetOfflineGrace sets how long a stream whose last publisher left keeps
// its viewers attached, waiting for a publisher to return (0 ends it at
// once). It applies to streams going offline afterwards.
func (r *Registry) SetOfflineGrace(d time.Duration) {
	r.mu.Lock()
	r.grace = max(d, 0)
	r.mu.Unlock()
}

// SetFastStart configures the GOP cache and catch-ups of every video track
// (see FastStart and Track.AddSinkFromKeyframe); zero fields take the
// defaults.
func (r *Registry) SetFastStart(f FastStart) {
	f = f.withDefaults()
	r.fast.Store(&f)
}

// Subscribe registers fn for on-air and off-air events. fn is called
// without registry locks held, one event at a time, in the order the
// changes happened; it may call back into the registry.
func (r *Registry) Subscribe(fn func(Event)) (cancel func()) {
	r.subsMu.Lock()
	id := r.nextID
	r.nextID++
	r.subs[id] = fn
	r.subsMu.Unlock()
	return func() {
		r.subsMu.Lock()
		delete(r.subs, id)
		r.subsMu.Unlock()
	}
}

// Lookup finds a stream by name. A stream whose publisher just left is
// still found during its offline grace; check Live. Looking up a stream
// that is not live is demand for it: an on-demand source registered for
// the name is asked to start (see OnDemand), and a later lookup finds it.
func (r *Registry) Lookup(name string) (*Stream, bool) {
	r.mu.Lock()
	s, ok := r.streams[name]
	live := ok && s.live
	r.mu.Unlock()
	if !live {
		r.Demand(name)
	}
	return s, ok
}

// OnDemand registers start as the way to bring the named stream on air
// when someone wants it while it is not live: a viewer, an HLS muxer or an
// RTSP reader looking it up. start is called without locks, possibly many
// times while the stream comes up; it must return at once (signal a
// goroutine) and be idempotent. One source per name: a later registration
// replaces an earlier one. cancel removes this registration.
func (r *Registry) OnDemand(name string, start func()) (cancel func()) {
	r.demandMu.Lock()
	r.demandNext++
	id := r.demandNext
	r.demand[name] = onDemand{id: id, start: start}
	r.demandMu.Unlock()
	return func() {
		r.demandMu.Lock()
		if d, ok := r.demand[name]; ok && d.id == id {
			delete(r.demand, name)
		}
		r.demandMu.Unlock()
	}
}

type onDemand struct {
	id    uint64
	start func()
}

// SetDemandFallback registers start as the on-demand source of every
// stream without one of its own (OnDemand): an edge's relay, which can
// pull any stream from its origin. start gets the stream name, must return
// at once and reports whether it will try to bring the stream on air.
// cancel removes it.
func (r *Registry) SetDemandFallback(start func(name string) bool) (cancel func()) {
	fn := &start
	r.demandMu.Lock()
	r.demandFallback = fn
	r.demandMu.Unlock()
	return func() {
		r.demandMu.Lock()
		if r.demandFallback == fn {
			r.demandFallback = nil
		}
		r.demandMu.Unlock()
	}
}

// Demand asks the named stream's on-demand source (or the fallback) to
// start, and reports whether one will try. It does nothing more for a
// stream without one.
func (r *Registry) Demand(name string) bool {
	r.demandMu.Lock()
	d, ok := r.demand[name]
	fallback := r.demandFallback
	r.demandMu.Unlock()
	switch {
	case ok:
		d.start()
		return true
	case fallback != nil:
		return (*fallback)(name)
	}
	return false
}

// Current finds a stream by name like Lookup, without demanding it.
func (r *Registry) Current(name string) (*Stream, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.streams[name]
	return s, ok
}

// EndPublishers ends every live publication for which match returns true:
// the stream goes offline (its grace period starts) and the publisher's
// Source is closed. It returns how many were ended. Revoking a stream key
// uses it to end the sessions that published with the key.
func (r *Registry) EndPublishers(match func(stream string, who PublisherInfo) bool) int {
	r.mu.Lock()
	var pubs []*Publication
	for name, s := range r.streams {
		if s.pub != nil && match(name, s.pub.who) {
			pubs = append(pubs, s.pub)
		}
	}
	r.mu.Unlock()
	for _, p := range pubs {
		p.Close()
		_ = p.src.Close()
	}
	return len(pubs)
}

// List describes the live streams, sorted by name.
func (r *Registry) List() []StreamInfo {
	r.mu.Lock()
	out := make([]StreamInfo, 0, len(r.streams))
	for _, s := range r.streams {
		if s.live {
			out = append(out, s.infoLocked())
		}
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b StreamInfo) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out
}

// Publish makes src the publisher of the named stream, with one track per
// codec (one video and one audio at most). If the stream is live, its
// current publisher is replaced: it stops being able to write and its
// Source is closed. Tracks keep their identity; a track whose codec is not
// Compatible with the new one detaches its sinks with ErrCodecChanged.
func (r *Registry) Publish(name string, who PublisherInfo, codecs []Codec, src Source) (*Publication, error) {
	if src == nil {
		return nil, errors.New("media: Publish needs a Source")
	}
	if len(codecs) == 0 {
		return nil, errors.New("media: Publish needs at least one track")
	}
	var byKind [2]*Codec
	for i := range codecs {
		c := codecs[i]
		idx := kindIndex(c.Kind())
		if idx < 0 {
			return nil, fmt.Errorf("media: codec %q is neither audio nor video", c.MimeType)
		}
		if c.ClockRate == 0 {
			return nil, fmt.Errorf("media: codec %q has no clock rate", c.MimeType)
		}
		if byKind[idx] != nil {
			return nil, fmt.Errorf("media: more than one %s track", c.Kind())
		}
		byKind[idx] = &c
	}

	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, ErrStreamEnded
	}
	s := r.streams[name]
	if s == nil {
		s = &Stream{reg: r, name: name}
		r.streams[name] = s
	}
	var old *Publication
	if s.pub != nil {
		old = s.pub
	}
	if s.grace != nil {
		s.grace.Stop()
		s.grace = nil
	}
	var detach []Sink
	for idx, c := range byKind {
		if c == nil {
			continue
		}
		t := s.tracks[idx]
		switch {
		case t == nil:
			s.tracks[idx] = newTrack(s, *c, rand.Uint32(), uint16(rand.Uint32()), rand.Uint32())
		case !t.Codec().Compatible(*c):
			detach = append(detach, t.takeSinks(false)...)
		}
	}
	r.gen++
	pub := &Publication{stream: s, gen: r.gen, src: src, who: who, tookOver: old != nil}
	for idx, t := range s.tracks {
		if t == nil {
			continue
		}
		if c := byKind[idx]; c != nil {
			t.attach(pub.gen, src, c)
			pub.tracks[idx] = &TrackWriter{track: t, gen: pub.gen}
		} else {
			t.attach(pub.gen, nil, nil) // not fed by this publisher
		}
	}
	if !s.live {
		s.startedAt = time.Now()
	}
	s.pub, s.live = pub, true
	r.enqueueLocked(Event{Stream: name, Live: true, Info: s.infoLocked()})
	r.mu.Unlock()

	r.drainEvents()
	for _, sink := range detach {
		sink.Detached(ErrCodecChanged)
	}
	if old != nil {
		old.closed.Store(true)
		_ = old.src.Close()
	}
	return pub, nil
}

// Close ends every stream: sinks are detached with ErrStreamEnded,
// offline events sent, and later Publish calls fail.
func (r *Registry) Close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	var detach []Sink
	for name, s := range r.streams {
		if s.live {
			r.enqueueLocked(Event{Stream: name, Live: false, Info: s.infoLocked()})
		}
		detach = append(detach, s.endLocked()...)
		delete(r.streams, name)
	}
	r.mu.Unlock()
	r.drainEvents()
	for _, sink := range detach {
		sink.Detached(ErrStreamEnded)
	}
}

func (r *Registry) enqueueLocked(ev Event) {
	r.evMu.Lock()
	r.queue = append(r.queue, ev)
	r.evMu.Unlock()
}

// drainEvents delivers queued events in order. Whoever finds the queue idle
// delivers everything queued until it is empty; others just enqueue, so a
// subscriber that causes another event does not deadlock or reorder.
func (r *Registry) drainEvents() {
	r.evMu.Lock()
	if r.draining {
		r.evMu.Unlock()
		return
	}
	r.draining = true
	for len(r.queue) > 0 {
		ev := r.queue[0]
		r.queue = r.queue[1:]
		r.evMu.Unlock()

		r.subsMu.Lock()
		fns := make([]func(Event), 0, len(r.subs))
		for _, fn := range r.subs {
			fns = append(fns, fn)
		}
		r.subsMu.Unlock()
		for _, fn := range fns {
			fn(ev)
		}

		r.evMu.Lock()
	}
	r.queue = nil
	r.draining = false
	r.evMu.Unlock()
}

func kindIndex(k Kind) int {
	switch k {
	case KindVideo:
		return 0
	case KindAudio:
		return 1
	}
	return -1
}

// Stream is a named broadcast: up to one video and one audio track, fed by
// one publisher at a time.
type Stream struct {
	reg  *Registry
	name string

	// Guarded by reg.mu.
	live      bool
	ended     bool
	pub       *Publication
	tracks    [2]*Track
	startedAt time.Time
	grace     *time.Timer
	graceGen  uint64 // identifies the current grace timer
}

// Name is the stream's name.
func (s *Stream) Name() string { return s.name }

// Live reports whether a publisher is on air.
func (s *Stream) Live() bool {
	s.reg.mu.Lock()
	defer s.reg.mu.Unlock()
	return s.live
}

// Ended reports whether the stream is gone for good (grace expired or
// registry closed); its tracks accept no sinks.
func (s *Stream) Ended() bool {
	s.reg.mu.Lock()
	defer s.reg.mu.Unlock()
	return s.ended
}

// Info describes the stream.
func (s *Stream) Info() StreamInfo {
	s.reg.mu.Lock()
	defer s.reg.mu.Unlock()
	return s.infoLocked()
}

// Track returns the stream's track of the given kind, if it ever had one.
func (s *Stream) Track(kind Kind) (*Track, bool) {
	idx := kindIndex(kind)
	if idx < 0 {
		return nil, false
	}
	s.reg.mu.Lock()
	defer s.reg.mu.Unlock()
	t := s.tracks[idx]
	return t, t != nil
}

// Tracks returns the tracks fed by the current publisher (all the stream's
// tracks while it is offline), video first.
func (s *Stream) Tracks() []*Track {
	s.reg.mu.Lock()
	defer s.reg.mu.Unlock()
	out := make([]*Track, 0, 2)
	for idx, t := range s.tracks {
		if t == nil {
			continue
		}
		if s.pub != nil && s.pub.tracks[idx] == nil {
			continue
		}
		out = append(out, t)
	}
	return out
}

func (s *Stream) infoLocked() StreamInfo {
	info := StreamInfo{Name: s.name, Node: s.reg.node, StartedAt: s.startedAt, Tracks: []TrackInfo{}}
	if s.pub != nil {
		info.Protocol, info.Publisher, info.KeyID = s.pub.who.Protocol, s.pub.who.Remote, s.pub.who.KeyID
	}
	for idx, t := range s.tracks {
		if t == nil || (s.pub != nil && s.pub.tracks[idx] == nil) {
			continue
		}
		info.Tracks = append(info.Tracks, t.info())
	}
	return info
}

// endLocked marks the stream ended and returns its sinks to detach.
func (s *Stream) endLocked() []Sink {
	s.ended, s.live = true, false
	if s.grace != nil {
		s.grace.Stop()
		s.grace = nil
	}
	if s.pub != nil {
		s.pub.closed.Store(true)
		s.pub = nil
	}
	var sinks []Sink
	for _, t := range s.tracks {
		if t != nil {
			t.attach(0, nil, nil)
			t.close()
			sinks = append(sinks, t.takeSinks(true)...)
		}
	}
	return sinks
}

// Publication is one publisher's hold on a stream, from Publish until Close
// or until a newer publisher takes over.
type Publication struct {
	stream   *Stream
	gen      uint64
	src      Source
	who      PublisherInfo
	tracks   [2]*TrackWriter
	closed   atomic.Bool
	tookOver bool
}

// TookOver reports whether this publication replaced a live publisher.
func (p *Publication) TookOver() bool { return p.tookOver }

// Stream is the published stream.
func (p *Publication) Stream() *Stream { return p.stream }

// Track returns the writer for the publication's track of the given kind.
func (p *Publication) Track(kind Kind) (*TrackWriter, bool) {
	idx := kindIndex(kind)
	if idx < 0 || p.tracks[idx] == nil {
		return nil, false
	}
	return p.tracks[idx], true
}

// Active reports whether the publication still owns its stream.
func (p *Publication) Active() bool { return !p.closed.Load() }

// Close says the publisher left. If it still owned the stream, the stream
// goes offline (an offline event) and, after the registry's grace period
// without a new publisher, ends. Close after a takeover does nothing.
func (p *Publication) Close() {
	r := p.stream.reg
	s := p.stream
	r.mu.Lock()
	if s.pub != p {
		r.mu.Unlock()
		p.closed.Store(true)
		return
	}
	p.closed.Store(true)
	s.pub, s.live = nil, false
	for _, t := range s.tracks {
		if t != nil {
			t.attach(0, nil, nil)
		}
	}
	r.enqueueLocked(Event{Stream: s.name, Live: false, Info: s.infoLocked()})
	var detach []Sink
	if r.grace == 0 {
		detach = s.endLocked()
		delete(r.streams, s.name)
	} else {
		s.graceGen++
		g := s.graceGen
		s.grace = time.AfterFunc(r.grace, func() { r.expire(s, g) })
	}
	r.mu.Unlock()
	r.drainEvents()
	for _, sink := range detach {
		sink.Detached(ErrStreamEnded)
	}
}

// expire ends a stream whose grace period ran out without a publisher.
func (r *Registry) expire(s *Stream, graceGen uint64) {
	r.mu.Lock()
	if s.live || s.ended || s.graceGen != graceGen || r.streams[s.name] != s {
		r.mu.Unlock()
		return
	}
	detach := s.endLocked()
	delete(r.streams, s.name)
	r.mu.Unlock()
	for _, sink := range detach {
		sink.Detached(ErrStreamEnded)
	}
}

// TrackWriter feeds one track of a publication.
type TrackWriter struct {
	track *Track
	gen   uint64
}

// Track is the stream track being fed.
func (w *TrackWriter) Track() *Track { return w.track }

// WriteRTP forwards a publisher packet. It returns ErrReplaced once the
// publication lost the stream; the caller should stop reading. The packet
// is not retained.
func (w *TrackWriter) WriteRTP(p *rtp.Packet) error { return w.track.write(w.gen, p) }

// WriteSenderReport forwards the publisher's RTCP sender report for this
// track to the sinks, mapped to the outgoing timeline.
func (w *TrackWriter) WriteSenderReport(sr *rtcp.SenderReport) error {
	return w.track.writeSenderReport(w.gen, sr)
}
