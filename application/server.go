package application

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/backchannel/backchannel/groups"
	"github.com/backchannel/backchannel/internal/apikeys"
	"github.com/backchannel/backchannel/internal/bus"
	"github.com/backchannel/backchannel/internal/control"
	"github.com/backchannel/backchannel/internal/geo"
	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/polls"
	"github.com/backchannel/backchannel/internal/store"
)

// Config configures an application server. Zero tuning fields take the
// defaults in their comments.
type Config struct {
	Bus         bus.Bus
	Edges       EdgeDirectory
	OperatorKey string      // operator Bearer key of /api/v1; more keys are created through the API
	Store       store.Store // durable state (polls, votes, groups, branding, keys); nil: in memory only
	Geo         *geo.Locator
	Logger      *slog.Logger
	Metrics     prometheus.Registerer

	QoEWindow  time.Duration // telemetry aggregation window (10 s)
	QoEWindows int           // windows kept per group (6)

	AudienceInterval time.Duration // least time between two results messages to one group (DefaultAudienceInterval, at least MinAudienceInterval)
	LiveInterval     time.Duration // least time between two live results events to the broadcaster (100 ms)
	Recorder         Recorder      // recording service behind /api/v1/…/recording(s); nil: 501
	// StreamInfo, when set, gives a live stream's current description
	// (measured bitrate, frame rate) for the API; without it the API shows
	// the description the on-air event carried.
	StreamInfo func(name string) (media.StreamInfo, bool)
}

// Server is an application server.
type Server struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	epoch   string // changes when this server's group offsets restart

	mu       sync.Mutex
	profiles map[string]*profile // by sid
	index    *groups.Index[string]
	conns    map[string]int       // connection server id → open links
	seen     map[string]time.Time // connection server id → last upward message from it
	live     map[string]media.StreamInfo
	offsets  map[string]uint64 // group id → offset of its last group message
	qoe      map[string]*qoeSeries
	polls    map[string]*pollState
	branding map[string]control.Branding // by stream
	resync   map[string]time.Time        // unknown links asked to reconnect, by sid
	now      func() time.Time

	keys     *apikeys.Keyring
	store    store.Store
	ownStore bool
	commits  chan *commit
	wg       sync.WaitGroup // goroutines started by Run
}

// profile is the application tier's mirror of one link.
type profile struct {
	sid, conn string
	voter     polls.Voter // the user id, interned for the tallies
	streams   []string    // nil = any; from the viewer JWT
	facts     groups.Facts
	lastSN    uint64
	reported  bool // lastSN is meaningful

	// What a vote needs, kept current where this tier changes the link's
	// attributes (open, watch) rather than rebuilt per vote; guarded by
	// Server.mu. attrs equals the index's view; dimAttrs is the part a
	// stored vote carries. Both maps are replaced, never modified.
	attrs    groups.Attrs
	dims     polls.Dims
	dimAttrs groups.Attrs
	// Whether the link is in the audience of polls with audience group
	// audGroup (a poll's audience is a function of its group id): the
	// polls of one stream share it, so a voter's votes in them are
	// checked once, not each by a walk of its attributes.
	audGroup string
	audMatch bool
}

// setAttrs records the link's current attributes; callers hold Server.mu.
func (p *profile) setAttrs(all groups.Attrs) {
	p.attrs = all
	p.dims = polls.DimsOf(all)
	p.dimAttrs = p.dims.Attrs()
	p.audGroup = ""
}

// inAudience reports whether the link may vote in ps; callers hold
// Server.mu.
func (p *profile) inAudience(ps *pollState) bool {
	if p.audGroup == "" || p.audGroup != ps.poll.Group {
		p.audGroup, p.audMatch = ps.poll.Group, ps.audience.Match(p.attrs)
	}
	return p.audMatch
}

// MinAudienceInterval is the shortest time between two poll results
// messages to one group: the audience sees at most two updates a second,
// however fast votes arrive. DefaultAudienceInterval is one a second:
// each update is a write to every link of the audience, which on a busy
// connection server costs about what a vote does, and at one a second
// the votes' acknowledgements (Config.ReplyDelay on the connection
// servers, also a second by default) ride these frames instead of
// writes of their own. Measured in BENCHMARKS.md.
const (
	MinAudienceInterval     = 500 * time.Millisecond
	DefaultAudienceInterval = time.Second
)

// New checks cfg and returns a server; Run starts its work.
func New(cfg Config) (*Server, error) {
	if cfg.Bus == nil {
		return nil, errors.New("application: Config.Bus is required")
	}
	if cfg.Edges == nil {
		return nil, errors.New("application: Config.Edges is required")
	}
	if cfg.OperatorKey == "" {
		return nil, errors.New("application: Config.OperatorKey is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = prometheus.NewRegistry()
	}
	if cfg.QoEWindow <= 0 {
		cfg.QoEWindow = 10 * time.Second
	}
	if cfg.QoEWindows <= 0 {
		cfg.QoEWindows = 6
	}
	if cfg.AudienceInterval <= 0 {
		cfg.AudienceInterval = DefaultAudienceInterval
	}
	if cfg.AudienceInterval < MinAudienceInterval {
		return nil, fmt.Errorf("application: audience interval %v: poll results go to the audience at most twice a second (%v or more)", cfg.AudienceInterval, MinAudienceInterval)
	}
	if cfg.LiveInterval <= 0 {
		cfg.LiveInterval = 100 * time.Millisecond
	}
	var e [5]byte
	if _, err := rand.Read(e[:]); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "application"),
		epoch:    base32.StdEncoding.EncodeToString(e[:]),
		profiles: make(map[string]*profile),
		index:    groups.NewIndex[string](),
		conns:    make(map[string]int),
		seen:     make(map[string]time.Time),
		live:     make(map[string]media.StreamInfo),
		offsets:  make(map[string]uint64),
		qoe:      make(map[string]*qoeSeries),
		polls:    make(map[string]*pollState),
		branding: make(map[string]control.Branding),
		resync:   make(map[string]time.Time),
		now:      time.Now,
		store:    cfg.Store,
		commits:  make(chan *commit, 1024),
	}
	if s.store == nil {
		s.store, _ = store.OpenFile("", cfg.Logger)
		s.ownStore = true
	}
	m, err := newMetrics(cfg.Metrics, s)
	if err != nil {
		return nil, fmt.Errorf("application: registering metrics: %w", err)
	}
	s.metrics = m
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if s.keys, err = apikeys.Open(ctx, cfg.OperatorKey, s.store); err != nil {
		return nil, fmt.Errorf("application: %w", err)
	}
	if err := s.load(ctx); err != nil {
		return nil, fmt.Errorf("application: loading state: %w", err)
	}
	return s, nil
}

// Run consumes the upward topic, commits votes, paces results and closes
// timed polls until ctx ends; then it stops everything it started.
func (s *Server) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	s.wg.Add(2)
	go func() { defer s.wg.Done(); s.committer(ctx) }()
	go func() { defer s.wg.Done(); s.pacer(ctx) }()
	if r, ok := s.cfg.Bus.(bus.Resetter); ok {
		resets := r.Resets()
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.watchResets(ctx, resets) }()
	}
	err := s.cfg.Bus.Subscribe(ctx, bus.Upward, bus.ApplicationGroup, s.handleUp)
	cancel()
	s.wg.Wait()
	s.stopTimers()
	if s.ownStore {
		s.store.Close()
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	return err
}

// outbox collects downward messages while a batch is handled, so that each
// connection server gets one publish per batch.
type outbox struct {
	order []string
	msgs  map[string][][]byte
}

func (o *outbox) add(conn string, m groups.Mirror) {
	if o.msgs == nil {
		o.msgs = make(map[string][][]byte)
	}
	if _, ok := o.msgs[conn]; !ok {
		o.order = append(o.order, conn)
	}
	o.msgs[conn] = append(o.msgs[conn], m.Encode())
}

func (s *Server) send(ctx context.Context, o *outbox) error {
	var errs []error
	for _, conn := range o.order {
		msgs := o.msgs[conn]
		if err := s.cfg.Bus.Publish(ctx, bus.Downward(conn), msgs...); err != nil {
			errs = append(errs, fmt.Errorf("to %s: %w", conn, err))
			continue
		}
		s.metrics.sent.Add(float64(len(msgs)))
	}
	return errors.Join(errs...)
}

// voteRefs recycles the votes decoded from upward batches.
var voteRefs = sync.Pool{New: func() any { return new([]groups.VoteRef) }}

func (s *Server) handleUp(ctx context.Context, batch []bus.Message) error {
	var out outbox
	c := &commit{}
	now := s.now()
	var lastConn string
	rp := voteRefs.Get().(*[]groups.VoteRef)
	refs := *rp
	defer func() {
		clear(refs[:cap(refs)]) // hold on to no message
		*rp = refs[:0]
		voteRefs.Put(rp)
	}()
	for _, bm := range batch {
		if groups.IsBatch(bm.Data) {
			conn, vbatch, votes, err := groups.DecodeVotes(bm.Data, refs[:0])
			if err != nil {
				s.log.Warn("skipping a bad upward batch", "id", bm.ID, "err", err)
				continue
			}
			refs = votes
			if string(conn) != lastConn {
				lastConn = string(conn)
				s.mu.Lock()
				s.seen[lastConn] = now
				s.mu.Unlock()
			}
			s.votes(lastConn, vbatch, refs, &out, c)
			if len(c.votes) >= maxCommitVotes {
				if err := s.handOver(ctx, &out, c); err != nil {
					return err
				}
				out, c = outbox{}, &commit{}
			}
			continue
		}
		m, err := groups.DecodeMirror(bm.Data)
		if err != nil {
			s.log.Warn("skipping a bad upward message", "id", bm.ID, "err", err)
			continue
		}
		if m.Conn != lastConn {
			lastConn = m.Conn
			s.mu.Lock()
			s.seen[m.Conn] = now
			s.mu.Unlock()
		}
		switch m.Op {
		case groups.OpLinkOpened:
			s.linkOpened(m, &out)
		case groups.OpLinkClosed:
			s.linkClosed(m)
		case groups.OpClientMessage:
			s.clientMessage(ctx, m, &out, c)
		default:
			s.log.Warn("ignoring a downward message on the upward topic", "op", m.Op)
		}
	}
	return s.handOver(ctx, &out, c)
}

// maxCommitVotes bounds the votes of one commit: a backlog is then
// committed in pieces of a reused size, each acknowledged as soon as it is
// durable, rather than in one ever larger batch.
const maxCommitVotes = 16 << 10

// handOver publishes what handling messages produced, then hands their
// votes to the committer: replies go out in the order of the messages that
// caused them.
func (s *Server) handOver(ctx context.Context, out *outbox, c *commit) error {
	if err := s.send(ctx, out); err != nil {
		// The connection servers' state would diverge; have the batch
		// redelivered rather than lose it.
		s.log.Warn("publishing downward failed", "err", err)
		return err
	}
	if len(c.votes) > 0 || len(c.acks) > 0 {
		// Acks go out once the committer has made the votes durable.
		select {
		case s.commits <- c:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (s *Server) linkOpened(m groups.Mirror, out *outbox) {
	attrs := deriveAttrs(s.cfg.Geo, m.Facts)
	// A repeated open (a connection server re-announcing its links after a
	// Redis reset) carries what this tier assigned earlier: keep it.
	for k, v := range m.Attrs {
		if k == groups.AttrStream || k == groups.AttrEdge || strings.HasPrefix(k, "x-") {
			attrs[k] = v
		}
	}
	all := attrs.Clone()
	all[groups.AttrConn] = m.Conn
	s.mu.Lock()
	if old, ok := s.profiles[m.Link]; ok {
		if s.conns[old.conn]--; s.conns[old.conn] <= 0 {
			delete(s.conns, old.conn)
		}
	}
	newConn := s.conns[m.Conn] == 0
	p := &profile{sid: m.Link, conn: m.Conn, voter: polls.VoterOf(m.UID), streams: m.Streams, facts: *m.Facts}
	p.setAttrs(all)
	s.profiles[m.Link] = p
	s.conns[m.Conn]++
	delete(s.resync, m.Link)
	s.index.Add(m.Link, all)
	s.mu.Unlock()
	if newConn {
		// A connection server this server has not talked to (new, or
		// this server restarted): give it every custom group first.
		for _, g := range s.index.CustomGroups() {
			out.add(m.Conn, groups.DefineGroup(g))
		}
	}
	out.add(m.Conn, groups.SetAttrs(m.Link, attrs))
}

func (s *Server) linkClosed(m groups.Mirror) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.profiles[m.Link]
	if !ok {
		return
	}
	delete(s.profiles, m.Link)
	s.index.Remove(m.Link)
	if s.conns[p.conn]--; s.conns[p.conn] <= 0 {
		delete(s.conns, p.conn)
	}
}

func (s *Server) clientMessage(ctx context.Context, m groups.Mirror, out *outbox, c *commit) {
	s.mu.Lock()
	p := s.profiles[m.Link]
	s.mu.Unlock()
	if p == nil {
		s.unknownLink(m.Conn, m.Link, out)
		return
	}
	msg, err := control.DecodeClient(m.Payload)
	if err != nil {
		s.log.Warn("relayed client message does not decode", "sid", m.Link, "err", err)
		return
	}
	switch {
	case msg.Watch != nil:
		s.watch(ctx, p, msg.Watch.Stream, out)
	case msg.Telemetry != nil:
		s.telemetry(p, msg.Telemetry)
	case msg.Vote != nil:
		s.vote(p, msg.Vote, out, c)
	case msg.Resume != nil:
		s.resumeUnrecovered(ctx, p, msg.Resume, out)
	}
}

// resumeUnrecovered answers a resume the connection server could not
// replay in full (it relays only those): the client missed messages, so it
// gets the current state of the stream it was watching again — endpoint,
// status, open polls, latest results, branding — as a fresh watch would.
// Clients that send watch again after reconnecting get it twice, which
// they tolerate: every piece of it is state, not an event.
func (s *Server) resumeUnrecovered(ctx context.Context, p *profile, r *control.Resume, out *outbox) {
	for g := range r.Offsets {
		if stream, ok := strings.CutPrefix(g, groups.AttrStream+":"); ok && media.ValidStreamName(stream) {
			s.watch(ctx, p, stream, out)
			return // a link watches one stream
		}
	}
}

func (s *Server) watch(ctx context.Context, p *profile, stream string, out *outbox) {
	if !media.ValidStreamName(stream) {
		out.add(p.conn, groups.SendLink(p.sid, control.Encode(control.Error{
			Code: control.ErrCodeBadStream, Message: media.StreamNameRule}), false))
		return
	}
	if p.streams != nil && !slices.Contains(p.streams, stream) {
		out.add(p.conn, groups.SendLink(p.sid, control.Encode(control.Error{
			Code: control.ErrCodeForbidden, Message: "your viewer token does not allow this stream"}), false))
		return
	}
	attrs, _ := s.index.Attrs(p.sid)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	loc := s.cfg.Geo.Lookup(p.facts.IP) // nearest edge by the viewer's location
	ep, err := s.cfg.Edges.Pick(pctx, Viewer{Attrs: attrs, Lat: loc.Lat, Lon: loc.Lon, Located: loc.HasCoords}, stream)
	cancel()
	if err != nil {
		s.log.Warn("no edge for viewer", "sid", p.sid, "stream", stream, "err", err)
		out.add(p.conn, groups.SendLink(p.sid, control.Encode(control.Error{
			Code: control.ErrCodeUnavailable, Message: "no edge available for this stream"}), false))
		return
	}
	set := groups.Attrs{groups.AttrStream: stream, groups.AttrEdge: ep.Edge}
	s.mu.Lock()
	s.index.Update(p.sid, set)
	if all, ok := s.index.Attrs(p.sid); ok {
		p.setAttrs(all)
	}
	_, live := s.live[stream]
	s.mu.Unlock()
	state := control.StateOffline
	if live {
		state = control.StateLive
	}
	out.add(p.conn, groups.SetAttrs(p.sid, set))
	out.add(p.conn, groups.SendLink(p.sid, control.Encode(control.Endpoint{
		Stream: stream, WHEP: ep.WHEP, HLS: ep.HLS, Edge: ep.Edge, Audio: s.audioNote(stream)}), true))
	out.add(p.conn, groups.SendLink(p.sid, control.Encode(control.StreamStatus{Stream: stream, State: state}), true))
	s.sendStreamState(p, stream, out)
}

func (s *Server) telemetry(p *profile, t *control.Telemetry) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	lost := 0
	switch {
	case !p.reported && t.SN > 1:
		lost = int(min(t.SN-1, 1<<20))
	case p.reported && t.SN > p.lastSN+1:
		lost = int(min(t.SN-p.lastSN-1, 1<<20))
	case p.reported && t.SN <= p.lastSN:
		s.metrics.duplicates.Inc()
		return // a duplicate or reordered report: already counted
	}
	p.lastSN, p.reported = t.SN, true
	s.metrics.reports.Inc()
	s.metrics.lost.Add(float64(lost))
	ids := []string{groups.GlobalID}
	if stream := p.attrs[groups.AttrStream]; stream != "" {
		ids = append(ids, groups.AutoID(groups.AttrStream, stream))
	}
	for _, id := range ids {
		series := s.qoe[id]
		if series == nil {
			series = &qoeSeries{}
			s.qoe[id] = series
		}
		series.add(now, s.cfg.QoEWindow, s.cfg.QoEWindows, t, lost)
	}
}

// StreamEvent records a stream going on or off air and pushes stream-status
// to its stream group: one message, encoded once, published to each
// connection server that holds links.
func (s *Server) StreamEvent(ev media.Event) {
	if !media.ValidStreamName(ev.Stream) {
		s.log.Warn("ignoring an event for an invalid stream name", "stream", ev.Stream)
		return
	}
	state := control.StateOffline
	s.mu.Lock()
	if ev.Live {
		state = control.StateLive
		s.live[ev.Stream] = ev.Info
	} else {
		delete(s.live, ev.Stream)
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.PublishGroup(ctx, groups.AutoID(groups.AttrStream, ev.Stream), control.StreamStatus{Stream: ev.Stream, State: state}, true); err != nil {
		s.log.Warn("pushing stream-status failed", "stream", ev.Stream, "err", err)
	}
}

// PublishGroup sends one message to every member of a group: encoded once
// with the group's next offset, published once to each connection server
// that holds links. Critical messages are never dropped by a slow link's
// queue.
func (s *Server) PublishGroup(ctx context.Context, group string, m control.ServerMessage, critical bool) error {
	data, conns, _ := s.groupMessage(group, m, critical)
	var errs []error
	for _, c := range conns {
		if err := s.cfg.Bus.Publish(ctx, bus.Downward(c), data); err != nil {
			errs = append(errs, fmt.Errorf("to %s: %w", c, err))
			continue
		}
		s.metrics.sent.Inc()
	}
	return errors.Join(errs...)
}

// groupMessage encodes a group message with the group's next offset and
// lists the connection servers to send it to.
func (s *Server) groupMessage(group string, m control.ServerMessage, critical bool) ([]byte, []string, uint64) {
	s.mu.Lock()
	s.offsets[group]++
	off := s.offsets[group]
	payload := control.EncodeGroup(m, group, off, s.epoch)
	conns := s.connsLocked()
	s.mu.Unlock()
	slices.Sort(conns)
	return groups.SendGroup(group, payload, critical).Encode(), conns, off
}

// connsLocked lists the connection servers to send group messages to:
// those with links this server knows, and those heard from in the last
// ten minutes (after a restart, links are relearned only as they speak).
// Callers hold s.mu.
func (s *Server) connsLocked() []string {
	conns := make([]string, 0, len(s.conns)+len(s.seen))
	for c := range s.conns {
		conns = append(conns, c)
	}
	cutoff := s.now().Add(-10 * time.Minute)
	for c, at := range s.seen {
		if at.Before(cutoff) {
			delete(s.seen, c)
		} else if s.conns[c] == 0 {
			conns = append(conns, c)
		}
	}
	return conns
}

// unknownLink handles a client message from a link this server has no
// profile for: one that closed meanwhile, a redelivery from before a
// restart, or a live link whose open this server never saw (it restarted,
// or took over from another application server). The last kind is asked
// to reconnect, once, so that its profile is announced again and its
// player resends what was not acknowledged; for the others the close is a
// no-op on the connection server.
func (s *Server) unknownLink(conn, sid string, out *outbox) {
	now := s.now()
	s.mu.Lock()
	if at, ok := s.resync[sid]; ok && now.Sub(at) < time.Minute {
		s.mu.Unlock()
		return
	}
	if len(s.resync) > 100_000 {
		for sid, at := range s.resync {
			if now.Sub(at) >= time.Minute {
				delete(s.resync, sid)
			}
		}
	}
	s.resync[sid] = now
	s.mu.Unlock()
	s.metrics.resyncs.Inc()
	out.add(conn, groups.CloseLink(sid, CloseResync, "application server lost this link's profile: reconnect"))
}

// CloseResync is the close code of a link the application tier asks to
// reconnect because it lost the link's profile.
const CloseResync = 4011

// ProfileView is what the application tier knows about one link.
type ProfileView struct {
	Sid    string       `json:"sid"`
	Conn   string       `json:"conn"`
	UID    string       `json:"uid"`
	Facts  groups.Facts `json:"facts"`
	Attrs  groups.Attrs `json:"attrs"`
	Groups []string     `json:"groups"`
}

// Profile returns the profile of a link by its sid.
func (s *Server) Profile(sid string) (ProfileView, bool) {
	s.mu.Lock()
	p, ok := s.profiles[sid]
	s.mu.Unlock()
	if !ok {
		return ProfileView{}, false
	}
	attrs, _ := s.index.Attrs(sid)
	return ProfileView{Sid: p.sid, Conn: p.conn, UID: p.voter.ID(), Facts: p.facts, Attrs: attrs, Groups: s.index.GroupsOf(sid)}, true
}
