package hls

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/backchannel/backchannel/internal/cmaf"
)

// muxer is the LL-HLS state of one stream on this edge: the segmenter's
// output kept as segments and parts, and the playlist rendered once per
// change for every viewer.
type muxer struct {
	name   string
	cfg    *Config
	token  string // in every media URI: a restarted muxer never reuses a URI
	seg    *cmaf.Segmenter
	access atomic.Int64 // unix nanoseconds of the last request's start or end
	users  atomic.Int32 // requests being served: a packager in use is never idle

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced on every change
	ended    bool
	inits    map[int]cmaf.Init
	segments []*segment // complete, oldest first
	current  *segment   // being filled; nil between a segment's end and the next part
	nextMSN  uint64
	discSeq  uint64 // discontinuities dropped off the playlist's head
	target   int    // EXT-X-TARGETDURATION, never decreases
	playlist []byte // rendered for the state below
	state    snapshot
	bitrate  float64 // bits/s, over the kept segments
}

type segment struct {
	msn           uint64
	init          int
	discontinuity bool
	wall          time.Time
	start         time.Duration
	duration      time.Duration
	parts         []*part
	data          []byte // the parts concatenated, once complete
	complete      bool
}

type part struct {
	data        []byte
	duration    time.Duration
	independent bool
	start       time.Duration
	arrived     time.Time
}

// snapshot is where the rendered playlist ends, for blocking requests.
type snapshot struct {
	ready       bool   // at least one complete segment
	lastMSN     uint64 // msn of the last segment listed (complete or partial)
	lastParts   int    // parts listed in it
	lastPartial bool   // the last segment is still being filled
}

func newMuxer(name string, cfg *Config) *muxer {
	var tok [4]byte
	_, _ = rand.Read(tok[:])
	m := &muxer{name: name, cfg: cfg, token: hex.EncodeToString(tok[:]), changed: make(chan struct{}), inits: map[int]cmaf.Init{}}
	m.touch()
	return m
}

func (m *muxer) touch() { m.access.Store(time.Now().UnixNano()) }

// hold marks a request in progress (a blocking playlist reload can outlast
// IdleTimeout); release ends it, restarting the idle clock.
func (m *muxer) hold() { m.users.Add(1); m.touch() }

func (m *muxer) release() { m.touch(); m.users.Add(-1) }

// idle reports whether nobody has used the packager for longer than d.
func (m *muxer) idle(now time.Time, d time.Duration) bool {
	return m.users.Load() == 0 && now.Sub(m.idleSince()) > d
}

func (m *muxer) idleSince() time.Time { return time.Unix(0, m.access.Load()) }

// broadcastLocked wakes every waiting request.
func (m *muxer) broadcastLocked() {
	close(m.changed)
	m.changed = make(chan struct{})
}

// WriteInit implements cmaf.Output.
func (m *muxer) WriteInit(in cmaf.Init) {
	m.mu.Lock()
	m.inits[in.ID] = in
	for id := range m.inits {
		if id < in.ID-8 {
			delete(m.inits, id)
		}
	}
	m.mu.Unlock()
}

// WritePart implements cmaf.Output.
func (m *muxer) WritePart(p cmaf.Part) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.current == nil || p.SegmentStart {
		if m.current != nil {
			m.closeSegmentLocked()
		}
		disc := len(m.segments) > 0 && m.segments[len(m.segments)-1].init != p.Init
		m.current = &segment{msn: m.nextMSN, init: p.Init, discontinuity: disc, wall: p.Wall, start: p.Start}
		m.nextMSN++
	}
	s := m.current
	s.parts = append(s.parts, &part{data: p.Data, duration: p.Duration, independent: p.Independent, start: p.Start, arrived: p.Arrived})
	s.duration += p.Duration
	if p.SegmentEnd {
		m.closeSegmentLocked()
	}
	m.renderLocked()
	m.broadcastLocked()
}

// End implements cmaf.Output.
func (m *muxer) End(error) {
	m.mu.Lock()
	m.ended = true
	m.broadcastLocked()
	m.mu.Unlock()
}

func (m *muxer) closeSegmentLocked() {
	s := m.current
	m.current = nil
	n := 0
	for _, p := range s.parts {
		n += len(p.data)
	}
	s.data = make([]byte, 0, n)
	for _, p := range s.parts {
		s.data = append(s.data, p.data...)
	}
	s.complete = true
	m.segments = append(m.segments, s)
	if d := int(math.Round(s.duration.Seconds())); d > m.target {
		m.target = d
	}
	// Keep SegmentCount listed, plus a few for clients a little behind.
	keep := m.cfg.SegmentCount + 2
	for len(m.segments) > keep {
		if m.segments[0].discontinuity {
			m.discSeq++
		}
		m.segments[0] = nil
		m.segments = m.segments[1:]
	}
	var bits float64
	var dur time.Duration
	for _, s := range m.segments {
		bits += float64(len(s.data) * 8)
		dur += s.duration
	}
	if dur > 0 {
		m.bitrate = bits / dur.Seconds()
	}
}

// listed returns the segments the playlist shows: the last SegmentCount
// complete ones.
func (m *muxer) listedLocked() []*segment {
	segs := m.segments
	if len(segs) > m.cfg.SegmentCount {
		segs = segs[len(segs)-m.cfg.SegmentCount:]
	}
	return segs
}

func (m *muxer) targetDurationLocked() int {
	return max(m.target, int(math.Ceil(m.cfg.SegmentTarget.Seconds())), 1)
}

// renderLocked renders the media playlist (RFC 8216bis, with the
// low-latency tags) for the current state.
func (m *muxer) renderLocked() {
	segs := m.listedLocked()
	if len(segs) == 0 {
		m.state = snapshot{}
		m.playlist = nil
		return
	}
	target := m.targetDurationLocked()
	partTarget := m.cfg.PartTarget.Seconds()
	var b bytes.Buffer
	b.WriteString("#EXTM3U\n#EXT-X-VERSION:9\n")
	fmt.Fprintf(&b, "#EXT-X-TARGETDURATION:%d\n", target)
	fmt.Fprintf(&b, "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=%.3f\n", m.partHoldBack())
	fmt.Fprintf(&b, "#EXT-X-PART-INF:PART-TARGET=%.3f\n", partTarget)
	fmt.Fprintf(&b, "#EXT-X-MEDIA-SEQUENCE:%d\n", segs[0].msn)
	// EXT-X-DISCONTINUITY-SEQUENCE counts the discontinuity tags not in the
	// playlist: those of dropped segments, of kept but unlisted ones, and
	// the first listed segment's own (a playlist does not start with one).
	disc := m.discSeq
	for _, s := range m.segments {
		if s.discontinuity {
			disc++
		}
		if s == segs[0] {
			break
		}
	}
	if disc > 0 {
		fmt.Fprintf(&b, "#EXT-X-DISCONTINUITY-SEQUENCE:%d\n", disc)
	}
	b.WriteString("#EXT-X-INDEPENDENT-SEGMENTS\n")

	all := segs
	if m.current != nil {
		all = append(append([]*segment(nil), segs...), m.current)
	}
	// Parts are listed for the segments within three target durations of
	// the live edge, as the spec allows, and for the partial one.
	var total time.Duration
	partsFrom := len(all)
	for i := len(all) - 1; i >= 0; i-- {
		total += all[i].duration
		partsFrom = i
		if total > 3*time.Duration(target)*time.Second {
			break
		}
	}
	init := -1
	for i, s := range all {
		if s.init != init {
			if s.discontinuity && i > 0 {
				b.WriteString("#EXT-X-DISCONTINUITY\n")
			}
			fmt.Fprintf(&b, "#EXT-X-MAP:URI=\"init-%s-%d.mp4\"\n", m.token, s.init)
			init = s.init
		}
		fmt.Fprintf(&b, "#EXT-X-PROGRAM-DATE-TIME:%s\n", s.wall.UTC().Format("2006-01-02T15:04:05.000Z07:00"))
		if i >= partsFrom {
			for j, p := range s.parts {
				fmt.Fprintf(&b, "#EXT-X-PART:DURATION=%.5f,URI=\"part-%s-%d-%d.mp4\"", p.duration.Seconds(), m.token, s.msn, j)
				if p.independent {
					b.WriteString(",INDEPENDENT=YES")
				}
				b.WriteByte('\n')
			}
		}
		if s.complete {
			fmt.Fprintf(&b, "#EXTINF:%.5f,\nseg-%s-%d.mp4\n", s.duration.Seconds(), m.token, s.msn)
		}
	}
	last := all[len(all)-1]
	hintMSN, hintPart := last.msn, len(last.parts)
	if last.complete {
		hintMSN, hintPart = last.msn+1, 0
	}
	fmt.Fprintf(&b, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-%s-%d-%d.mp4\"\n", m.token, hintMSN, hintPart)
	m.playlist = b.Bytes()
	m.state = snapshot{ready: true, lastMSN: last.msn, lastParts: len(last.parts), lastPartial: !last.complete}
}

// partHoldBack is how far from the live edge players stay: three parts,
// what the spec recommends (at least two).
func (m *muxer) partHoldBack() float64 { return 3 * m.cfg.PartTarget.Seconds() }

// satisfiedLocked reports whether the rendered playlist answers a blocking
// request for segment msn (and part, when part ≥ 0).
func (m *muxer) satisfiedLocked(msn uint64, part int) bool {
	st := m.state
	if !st.ready {
		return false
	}
	if part < 0 {
		// The segment must be complete.
		return msn < st.lastMSN || (msn == st.lastMSN && !st.lastPartial)
	}
	if msn < st.lastMSN {
		return true
	}
	if msn == st.lastMSN {
		return part < st.lastParts || !st.lastPartial
	}
	// The next segment's first part stands for the parts beyond the end of
	// a segment that turned out shorter.
	return false
}

// find returns a complete segment, or a part, by msn.
func (m *muxer) findLocked(msn uint64) *segment {
	if m.current != nil && m.current.msn == msn {
		return m.current
	}
	for _, s := range m.segments {
		if s.msn == msn {
			return s
		}
	}
	return nil
}

// nextPart reports whether (msn, part) is the part the segmenter will
// produce next: a request for it may wait.
func (m *muxer) isNextPartLocked(msn uint64, idx int) bool {
	if m.current != nil {
		return msn == m.current.msn && idx == len(m.current.parts)
	}
	return msn == m.nextMSN && idx == 0
}

func formatBandwidth(bps float64) string {
	if bps <= 0 {
		bps = 2_000_000
	}
	return strconv.FormatInt(int64(bps*1.1), 10)
}
