package application

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"time"

	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/backchannel/backchannel/groups"
	"github.com/backchannel/backchannel/internal/bus"
	"github.com/backchannel/backchannel/internal/control"
	"github.com/backchannel/backchannel/internal/media"
)

// Config configures an application server. Zero tuning fields take the
// defaults in their comments.
type Config struct {
	Bus         bus.Bus
	Edges       EdgeDirectory
	OperatorKey string // Bearer key of /api/v1
	Logger      *slog.Logger
	Metrics     prometheus.Registerer

	QoEWindow  time.Duration // telemetry aggregation window (10 s)
	QoEWindows int           // windows kept per group (6)

	Recorder Recorder // recording service behind /api/v1/…/recording(s); nil: 501
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
	conns    map[string]int // connection server id → open links
	live     map[string]media.StreamInfo
	offsets  map[string]uint64 // group id → offset of its last group message
	qoe      map[string]*qoeSeries
	now      func() time.Time
}

// profile is the application tier's mirror of one link.
type profile struct {
	sid, conn, uid string
	streams        []string // nil = any; from the viewer JWT
	facts          groups.Facts
	lastSN         uint64
	reported       bool // lastSN is meaningful
}

var streamName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// ValidStreamName reports whether name is acceptable as a stream name.
func ValidStreamName(name string) bool { return streamName.MatchString(name) }

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
		live:     make(map[string]media.StreamInfo),
		offsets:  make(map[string]uint64),
		qoe:      make(map[string]*qoeSeries),
		now:      time.Now,
	}
	m, err := newMetrics(cfg.Metrics, s)
	if err != nil {
		return nil, fmt.Errorf("application: registering metrics: %w", err)
	}
	s.metrics = m
	return s, nil
}

// Run consumes the upward topic until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	err := s.cfg.Bus.Subscribe(ctx, bus.Upward, bus.ApplicationGroup, s.handleUp)
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

func (s *Server) handleUp(ctx context.Context, batch []bus.Message) error {
	var out outbox
	for _, bm := range batch {
		m, err := groups.DecodeMirror(bm.Data)
		if err != nil {
			s.log.Warn("skipping a bad upward message", "id", bm.ID, "err", err)
			continue
		}
		switch m.Op {
		case groups.OpLinkOpened:
			s.linkOpened(m, &out)
		case groups.OpLinkClosed:
			s.linkClosed(m)
		case groups.OpClientMessage:
			s.clientMessage(ctx, m, &out)
		default:
			s.log.Warn("ignoring a downward message on the upward topic", "op", m.Op)
		}
	}
	if err := s.send(ctx, &out); err != nil {
		// The connection servers' state would diverge; have the batch
		// redelivered rather than lose it.
		s.log.Warn("publishing downward failed", "err", err)
		return err
	}
	return nil
}

func (s *Server) linkOpened(m groups.Mirror, out *outbox) {
	attrs := deriveAttrs(m.Facts)
	all := attrs.Clone()
	all[groups.AttrConn] = m.Conn
	s.mu.Lock()
	if old, ok := s.profiles[m.Link]; ok {
		s.conns[old.conn]--
	}
	s.profiles[m.Link] = &profile{sid: m.Link, conn: m.Conn, uid: m.UID, streams: m.Streams, facts: *m.Facts}
	s.conns[m.Conn]++
	s.index.Add(m.Link, all)
	s.mu.Unlock()
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

func (s *Server) clientMessage(ctx context.Context, m groups.Mirror, out *outbox) {
	s.mu.Lock()
	p := s.profiles[m.Link]
	s.mu.Unlock()
	if p == nil {
		return // closed meanwhile, or a duplicate from before a restart
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
		// Polls arrive in a later issue; say so rather than pretend to count.
		out.add(p.conn, groups.SendLink(p.sid, control.Encode(control.Error{
			Code: control.ErrCodeUnknownPoll, Message: "no such poll", ID: msg.Vote.ID}), false))
	case msg.Resume != nil:
		// Replay is not implemented: the client already got a fresh
		// welcome and is sent current state again after watch.
	}
}

func (s *Server) watch(ctx context.Context, p *profile, stream string, out *outbox) {
	if !ValidStreamName(stream) {
		out.add(p.conn, groups.SendLink(p.sid, control.Encode(control.Error{
			Code: control.ErrCodeBadStream, Message: "stream names are 1-64 characters of A-Z a-z 0-9 _ . -"}), false))
		return
	}
	if p.streams != nil && !slices.Contains(p.streams, stream) {
		out.add(p.conn, groups.SendLink(p.sid, control.Encode(control.Error{
			Code: control.ErrCodeForbidden, Message: "your viewer token does not allow this stream"}), false))
		return
	}
	attrs, _ := s.index.Attrs(p.sid)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	ep, err := s.cfg.Edges.Pick(pctx, attrs, stream)
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
	_, live := s.live[stream]
	s.mu.Unlock()
	state := control.StateOffline
	if live {
		state = control.StateLive
	}
	out.add(p.conn, groups.SetAttrs(p.sid, set))
	out.add(p.conn, groups.SendLink(p.sid, control.Encode(control.Endpoint{
		Stream: stream, WHEP: ep.WHEP, HLS: ep.HLS, Edge: ep.Edge}), true))
	out.add(p.conn, groups.SendLink(p.sid, control.Encode(control.StreamStatus{Stream: stream, State: state}), true))
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
	if attrs, ok := s.index.Attrs(p.sid); ok && attrs[groups.AttrStream] != "" {
		ids = append(ids, groups.AutoID(groups.AttrStream, attrs[groups.AttrStream]))
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
	if !ValidStreamName(ev.Stream) {
		s.log.Warn("ignoring an event for an invalid stream name", "stream", ev.Stream)
		return
	}
	g := groups.AutoID(groups.AttrStream, ev.Stream)
	state := control.StateOffline
	s.mu.Lock()
	if ev.Live {
		state = control.StateLive
		s.live[ev.Stream] = ev.Info
	} else {
		delete(s.live, ev.Stream)
	}
	s.offsets[g]++
	payload := control.EncodeGroup(control.StreamStatus{Stream: ev.Stream, State: state}, g, s.offsets[g], s.epoch)
	conns := make([]string, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	data := groups.SendGroup(g, payload, true).Encode()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, c := range conns {
		if err := s.cfg.Bus.Publish(ctx, bus.Downward(c), data); err != nil {
			s.log.Warn("pushing stream-status failed", "conn", c, "stream", ev.Stream, "err", err)
			continue
		}
		s.metrics.sent.Inc()
	}
}

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
	return ProfileView{Sid: p.sid, Conn: p.conn, UID: p.uid, Facts: p.facts, Attrs: attrs, Groups: s.index.GroupsOf(sid)}, true
}
