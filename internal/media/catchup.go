package media

import (
	"math"
	"time"
)

// A catch-up brings one new sink of a video track from the track's last
// keyframe to the live point: it replays the GOP cache to that sink alone,
// paced faster than real time, then hands the sink over to the track's
// fan-out at a packet boundary, so the sink sees every packet exactly once
// and in order.
//
// Sequence numbers need no rewriting: the cached packets are the ones the
// track sent, contiguous with the live ones that follow. Timestamps do: a
// receiver given seconds-old timestamps in a burst would play seconds
// behind (its jitter buffer keeps the spacing the timestamps promise). So
// each replayed frame gets a timestamp of this sink's own, close to the
// newest frame's: frame f is stamped newestTS − (newestFrame − f)·step,
// computed when its first packet is sent. Replayed frames thus advance
// about as fast as they are delivered, stay strictly increasing, and the
// mapping becomes the identity at the live point; viewers already watching
// never see any of it.
type catchUp struct {
	t    *Track
	sink Sink
	stop chan struct{}
	done chan struct{}

	fs       FastStart
	deadline time.Time
	step     uint32 // timestamp ticks between replayed frames

	started   bool
	lastFrame uint32
	mapped    uint32
}

// AddSinkFromKeyframe attaches s to a video track starting at the most
// recent keyframe the track sent, when its GOP cache has one that is
// recent enough (see FastStart): s first receives the cached packets,
// flagged CatchUp and with timestamps of its own, at a paced rate, then
// the live ones. catchingUp reports whether that happens; otherwise s is
// attached as with AddSink and waits for the next keyframe (ask for one).
// remove detaches s whether or not it caught up yet.
func (t *Track) AddSinkFromKeyframe(s Sink) (remove func(), catchingUp bool, err error) {
	fs := t.fastStart()
	g := t.gop.Load()
	if t.kind != KindVideo || fs.Disabled || g == nil || time.Since(g.start) > fs.MaxAge || g.isFull() {
		remove, err := t.AddSink(s)
		return remove, false, err
	}
	c := &catchUp{t: t, sink: s, stop: make(chan struct{}), done: make(chan struct{}), fs: fs,
		deadline: time.Now().Add(fs.MaxAge), step: max(1, t.Codec().ClockRate/10000)}

	t.sinkMu.Lock()
	if t.ended {
		t.sinkMu.Unlock()
		return nil, false, ErrStreamEnded
	}
	if t.catchUps == nil {
		t.catchUps = map[*catchUp]struct{}{}
	}
	t.catchUps[c] = struct{}{}
	t.sinkMu.Unlock()
	t.catchUpsStarted.Add(1)
	go c.run(g)
	return func() {
		t.sinkMu.Lock()
		_, running := t.catchUps[c]
		delete(t.catchUps, c)
		t.sinkMu.Unlock()
		if running {
			close(c.stop)
		}
		<-c.done
		t.removeSink(s)
	}, true, nil
}

func (c *catchUp) stopped() bool {
	select {
	case <-c.stop:
		return true
	default:
		return false
	}
}

// rate is the pace in bytes per second, from the track's current bitrate,
// and burst what may go at once: a tenth of a second's worth, so the
// keyframe usually leaves in one go and the first picture comes with the
// first round trip.
func (c *catchUp) rate() (rate, burst float64) {
	rate = max(float64(c.fs.MinRate), c.fs.RateFactor*math.Float64frombits(c.t.kbps.Load())*1000/8)
	return rate, max(rate/10, 32<<10)
}

func (c *catchUp) run(g *gop) {
	defer close(c.done)
	_, tokens := c.rate()
	last := time.Now()
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for i := 0; ; {
		if c.stopped() {
			return
		}
		p, next, full, ok := g.at(i)
		switch {
		case ok:
			i++
		case next != nil:
			g, i = next, 0
			continue
		case full:
			// The GOP outgrew its bound while we replayed it: what was
			// not kept is lost to this sink, which joins live (its
			// receiver sees the gap and asks for a keyframe).
			c.handOver(nil, 0)
			return
		default:
			c.handOver(g, i)
			return
		}
		size := float64(len(p.payload) + 12)
		now := time.Now()
		if now.After(c.deadline) {
			// The live stream outruns the pace (a bitrate far above what
			// was measured): give up replaying and join live, as above.
			c.handOver(nil, 0)
			return
		}
		rate, burst := c.rate()
		tokens = min(burst, tokens+now.Sub(last).Seconds()*rate)
		last = now
		if tokens < size {
			wait := time.Duration((size - tokens) / rate * float64(time.Second))
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			select {
			case <-timer.C:
			case <-c.stop:
				return
			}
			now = time.Now()
			tokens = min(burst, tokens+now.Sub(last).Seconds()*rate)
			last = now
		}
		tokens -= size
		c.send(&p)
	}
}

// handOver sends what is left of the cache from g[i] on and adds the sink
// to the fan-out, all under the track's write lock, so the next live
// packet goes to it through the fan-out and none is sent twice or missed.
func (c *catchUp) handOver(g *gop, i int) {
	t := c.t
	t.wmu.Lock()
	defer t.wmu.Unlock()
	for g != nil {
		p, next, _, ok := g.at(i)
		if !ok {
			g, i = next, 0
			continue
		}
		i++
		c.send(&p)
	}
	t.sinkMu.Lock()
	defer t.sinkMu.Unlock()
	if _, running := t.catchUps[c]; !running {
		return // removed or detached meanwhile
	}
	delete(t.catchUps, c)
	old := *t.sinks.Load()
	next := make([]Sink, len(old), len(old)+1)
	copy(next, old)
	next = append(next, c.sink)
	t.sinks.Store(&next)
}

func (c *catchUp) send(p *gopPacket) {
	if !c.started || p.frame != c.lastFrame {
		newestFrame, newestTS := c.t.newest()
		ts := newestTS - (newestFrame-p.frame)*c.step
		if c.started && int32(ts-c.mapped) <= 0 {
			ts = c.mapped + 1
		}
		c.mapped, c.lastFrame, c.started = ts, p.frame, true
	}
	out := Packet{Header: p.hdr, Payload: p.payload, Keyframe: p.key, CatchUp: true}
	out.Header.Timestamp = c.mapped
	c.sink.WriteRTP(&out)
}
