package media

import (
	"sync"
	"time"

	"github.com/pion/rtp"
)

// FastStart configures how a video track keeps its current group of
// pictures (GOP: the packets since the last keyframe start) and how a new
// sink is brought from that keyframe to the live point.
type FastStart struct {
	// Disabled turns the GOP cache off: new sinks wait for the next
	// keyframe, as with a plain AddSink.
	Disabled bool
	// MaxBytes bounds the payload bytes one GOP may hold; a GOP growing
	// past it is dropped (default 8 MiB: 25 s of 2.5 Mbit/s).
	MaxBytes int
	// MaxAge is the oldest keyframe a new sink is started from (default
	// 15 s): catching up from further back takes too long.
	MaxAge time.Duration
	// RateFactor and MinRate pace a catch-up: at RateFactor times the
	// track's measured bitrate, and at least MinRate bytes per second
	// (defaults 4 and 1.25 MB/s, i.e. 10 Mbit/s). Faster gets a viewer
	// to the live point sooner; slower loses fewer packets on thin paths.
	RateFactor float64
	MinRate    int
}

// Fast-start defaults.
const (
	DefaultGOPBytes      = 8 << 20
	DefaultGOPAge        = 15 * time.Second
	DefaultCatchUpFactor = 4
	DefaultCatchUpRate   = 10_000_000 / 8
)

func (f FastStart) withDefaults() FastStart {
	if f.MaxBytes <= 0 {
		f.MaxBytes = DefaultGOPBytes
	}
	if f.MaxAge <= 0 {
		f.MaxAge = DefaultGOPAge
	}
	if f.RateFactor <= 0 {
		f.RateFactor = DefaultCatchUpFactor
	}
	if f.MinRate <= 0 {
		f.MinRate = DefaultCatchUpRate
	}
	return f
}

// gop holds the outgoing packets of one group of pictures, from a decoder
// start point up to the next one, which starts the next gop. The track's
// writer appends under its write lock; catch-up readers read concurrently.
// A gop that outgrows its byte bound is abandoned (full) and no longer
// offered.
type gop struct {
	start time.Time

	mu    sync.RWMutex
	pkts  []gopPacket
	arena []byte // current payload chunk; earlier chunks stay referenced by pkts
	bytes int
	full  bool
	next  *gop
}

type gopPacket struct {
	hdr     rtp.Header
	payload []byte
	frame   uint32 // track-wide frame index (decode order)
	key     bool
}

const gopChunk = 256 << 10

func newGOP(at time.Time) *gop { return &gop{start: at} }

// append copies a packet in; it reports false once the gop is full.
func (g *gop) append(p *Packet, frame uint32, maxBytes int) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.full {
		return false
	}
	if g.bytes+len(p.Payload) > maxBytes {
		g.full = true
		return false
	}
	if cap(g.arena)-len(g.arena) < len(p.Payload) {
		g.arena = make([]byte, 0, max(gopChunk, len(p.Payload)))
	}
	off := len(g.arena)
	g.arena = append(g.arena, p.Payload...)
	gp := gopPacket{hdr: p.Header, payload: g.arena[off:len(g.arena):len(g.arena)], frame: frame, key: p.Keyframe}
	gp.hdr.CSRC, gp.hdr.Extensions = nil, nil
	g.pkts = append(g.pkts, gp)
	g.bytes += len(p.Payload)
	return true
}

// link makes n the gop that follows g.
func (g *gop) link(n *gop) {
	g.mu.Lock()
	g.next = n
	g.mu.Unlock()
}

// at returns packet i, or the next gop when i is past the end and it has
// started; ok is false at the live end (or at the end of a full gop).
func (g *gop) at(i int) (p gopPacket, next *gop, full, ok bool) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if i < len(g.pkts) {
		return g.pkts[i], nil, false, true
	}
	return gopPacket{}, g.next, g.full, false
}

func (g *gop) isFull() bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.full
}
