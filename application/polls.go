package application

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/backchannel/backchannel/groups"
	"github.com/backchannel/backchannel/internal/bus"
	"github.com/backchannel/backchannel/internal/control"
	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/polls"
	"github.com/backchannel/backchannel/internal/store"
)

// Store document kinds.
const (
	kindPoll     = "poll"
	kindGroup    = "group"
	kindBranding = "branding"
)

// pollState is a poll and its tally. The poll's fields are guarded by
// Server.mu; the tally has its own lock.
type pollState struct {
	poll     polls.Poll
	audience *groups.Predicate // poll.Audience(), built once
	tally    *polls.Tally
	pushed   uint64    // tally version last pushed to the audience
	pushedAt time.Time // when
	final    bool      // final results sent
	timer    *time.Timer
	// Live-results streams wait without Server.mu, which counting votes
	// holds: a stream queued behind it would lag the votes by as long.
	closed  atomic.Bool   // poll.State is closed
	watchMu sync.Mutex    // guards changed
	changed chan struct{} // closed and replaced when the counts or state change, if watched
	watched atomic.Bool   // a live-results stream waits on changed
}

func (s *Server) newPollState(p polls.Poll) *pollState {
	ps := &pollState{poll: p, audience: p.Audience(), tally: polls.NewTally(len(p.Choices), s.index.Count(p.Group)), changed: make(chan struct{})}
	ps.closed.Store(p.State == polls.StateClosed)
	return ps
}

// notify wakes live-results watchers. Between two looks of the watchers
// at the counts, only the first change closes the channel: the rest cost
// an atomic load.
func (ps *pollState) notify() {
	if !ps.watched.Load() || !ps.watched.CompareAndSwap(true, false) {
		return
	}
	ps.watchMu.Lock()
	close(ps.changed)
	ps.changed = make(chan struct{})
	ps.watchMu.Unlock()
}

// watch returns the channel the next change closes. Callers look at the
// counts and at closed after it, so that no change goes unseen.
func (ps *pollState) watch() <-chan struct{} {
	ps.watchMu.Lock()
	defer ps.watchMu.Unlock()
	ps.watched.Store(true)
	return ps.changed
}

// commit is one upward batch's votes, waiting to be made durable before
// they are acknowledged: the votes of numbered vote batches by naming
// their batches to the connection server that relayed them (OpCommitted),
// which then acks them, and other votes one by one (OpSends).
type commit struct {
	votes     []store.Vote
	acks      map[string]*groups.SendBatch // by connection server
	committed map[string]*groups.Committed // by connection server
	order     []string                     // connection servers in first-reply order
	ack       []byte                       // scratch
}

// Vote batches are recycled: after warming up they are as large as a
// commit needs, so counting a vote never grows (and copies) one.
var voteSlices = sync.Pool{New: func() any { return new([]store.Vote) }}

func getVotes() []store.Vote { return (*voteSlices.Get().(*[]store.Vote))[:0] }

// putVotes recycles votes, which nothing may use any more.
func putVotes(v []store.Vote) {
	if cap(v) == 0 || cap(v) > 1<<20 {
		return
	}
	clear(v) // keep no users or attributes alive
	v = v[:0]
	voteSlices.Put(&v)
}

// replyTo notes that conn gets replies from this commit.
func (c *commit) replyTo(conn string) {
	if _, ok := c.acks[conn]; ok {
		return
	}
	if _, ok := c.committed[conn]; ok {
		return
	}
	c.order = append(c.order, conn)
}

// addCommitted names vote batch batch of connection server conn in this
// commit's report to it; the votes at the refused indexes were answered
// with an error and are not acked.
func (c *commit) addCommitted(conn string, batch uint64, refused []int) {
	b := c.committed[conn]
	if b == nil {
		c.replyTo(conn)
		if c.committed == nil {
			c.committed = make(map[string]*groups.Committed)
		}
		b = groups.NewCommitted()
		c.committed[conn] = b
	}
	b.Add(batch, refused)
}

// addAck queues the ack of vote id for a link of connection server conn.
func (c *commit) addAck(conn, sid string, id []byte) {
	b := c.acks[conn]
	if b == nil {
		c.replyTo(conn)
		if c.acks == nil {
			c.acks = make(map[string]*groups.SendBatch)
		}
		b = groups.NewSendBatch(64)
		c.acks[conn] = b
	}
	c.ack = control.AppendAck(c.ack[:0], id)
	// Critical: a lost ack makes the player resend after its next
	// reconnect, which is harmless but slow to converge. It may wait to
	// share a write with other frames to the link.
	b.Add(sid, c.ack, true, true)
}

// voteRefusal is a vote refused, to be answered with an error.
type voteRefusal struct {
	p        *profile
	id, code string
	msg      string
}

// voteLocked counts one vote of profile p: one per user per poll, a
// changed vote moving the count. It is recorded in c, made durable by the
// committer, which then has it acked (the caller tells c how). Callers
// hold s.mu, so that a vote is either counted before a close or refused
// after it: the final results hold every acked vote. It returns the
// refusal code and message, if any.
func (s *Server) voteLocked(p *profile, poll []byte, choice int, now time.Time, c *commit) (code, msg string) {
	ps := s.polls[string(poll)]
	switch {
	case ps == nil:
		return control.ErrCodeUnknownPoll, "no such poll"
	case choice >= len(ps.poll.Choices):
		return control.ErrCodeBadChoice, "no such choice"
	case !ps.poll.Open(now):
		// A resend of a vote counted before the close is still acked.
		if prev, ok := ps.tally.Choice(p.voter); !ok || prev != choice {
			return control.ErrCodePollClosed, "the poll is closed"
		}
	case !p.inAudience(ps):
		return control.ErrCodeNotAudience, "this poll is not for you"
	default:
		outcome := ps.tally.ApplyDims(p.voter, choice, p.dims)
		if outcome != polls.Unchanged {
			ps.notify()
		}
		s.metrics.votesBy[outcome].Inc()
	}
	c.votes = append(c.votes, store.Vote{Poll: ps.poll.ID, User: p.voter.ID(), Choice: choice, Attrs: p.dimAttrs, AttrsKey: p.dims})
	return "", ""
}

// votesPerLock bounds how many votes are counted under one hold of
// Server.mu: an upward batch has thousands, and whatever else needs the
// lock (the API, the pacer, links opening) would wait for all of them, tens
// of milliseconds on a busy server.
const votesPerLock = 256

// votes counts a connection server's batch of votes, numbered batch (0:
// none, each vote is acked on its own).
func (s *Server) votes(conn string, batch uint64, refs []groups.VoteRef, out *outbox, c *commit) {
	var unknown []string
	var refused []voteRefusal
	var refusedAt []int // indexes of the votes not counted, for a numbered batch
	now := s.now()
	if c.votes == nil {
		c.votes = getVotes()
	}
	s.mu.Lock()
	for i := range refs {
		if i > 0 && i%votesPerLock == 0 {
			s.mu.Unlock()
			s.mu.Lock()
		}
		r := &refs[i]
		p := s.profiles[string(r.Link)]
		if p == nil {
			unknown = append(unknown, string(r.Link))
			refusedAt = append(refusedAt, i)
			continue
		}
		if code, msg := s.voteLocked(p, r.Poll, r.Choice, now, c); code != "" {
			refused = append(refused, voteRefusal{p: p, id: string(r.ID), code: code, msg: msg})
			refusedAt = append(refusedAt, i)
		} else if batch == 0 {
			c.addAck(p.conn, p.sid, r.ID)
		}
	}
	if batch != 0 {
		c.addCommitted(conn, batch, refusedAt)
	}
	s.mu.Unlock()
	for _, sid := range unknown {
		s.unknownLink(conn, sid, out)
	}
	for _, r := range refused {
		s.refuseVote(r, out)
	}
}

// vote counts one vote relayed as a JSON client message.
func (s *Server) vote(p *profile, v *control.Vote, out *outbox, c *commit) {
	s.mu.Lock()
	code, msg := s.voteLocked(p, []byte(v.Poll), v.Choice, s.now(), c)
	if code == "" {
		c.addAck(p.conn, p.sid, []byte(v.ID))
	}
	s.mu.Unlock()
	if code != "" {
		s.refuseVote(voteRefusal{p: p, id: v.ID, code: code, msg: msg}, out)
	}
}

func (s *Server) refuseVote(r voteRefusal, out *outbox) {
	s.metrics.votesRejected.WithLabelValues(r.code).Inc()
	out.add(r.p.conn, groups.SendLink(r.p.sid, control.Encode(control.Error{Code: r.code, Message: r.msg, ID: r.id}), false))
}

// committer makes votes durable, as many upward batches at a time as have
// accumulated (one fsync or one Redis pipeline for all), then acknowledges
// them: one publish per connection server.
func (s *Server) committer(ctx context.Context) {
	for {
		var batch []*commit
		select {
		case c := <-s.commits:
			batch = append(batch, c)
		case <-ctx.Done():
			return
		}
		n := len(batch[0].votes)
	more:
		for len(batch) < 256 && n < 4*maxCommitVotes {
			select {
			case c := <-s.commits:
				batch = append(batch, c)
				n += len(c.votes)
			default:
				break more
			}
		}
		var votes []store.Vote
		if len(batch) == 1 {
			votes = batch[0].votes
		} else {
			votes = getVotes()
			for _, c := range batch {
				votes = append(votes, c.votes...)
				putVotes(c.votes)
				c.votes = nil
			}
		}
		start := time.Now()
		for attempt := 0; ; attempt++ {
			err := s.store.SaveVotes(ctx, votes)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			s.log.Error("saving votes failed; retrying (they are not acknowledged meanwhile)", "votes", len(votes), "err", err)
			if !sleepCtx(ctx, min(time.Duration(attempt+1)*100*time.Millisecond, 2*time.Second)) {
				return
			}
		}
		s.metrics.commitSeconds.Observe(time.Since(start).Seconds())
		putVotes(votes)
		for _, c := range batch {
			c.votes = nil
		}
		// Per connection server, its replies of each commit in order.
		replies := map[string][][]byte{}
		var order []string
		for _, c := range batch {
			for _, conn := range c.order {
				if _, ok := replies[conn]; !ok {
					order = append(order, conn)
				}
				if b := c.acks[conn]; b != nil {
					replies[conn] = append(replies[conn], b.Bytes())
				}
				if b := c.committed[conn]; b != nil {
					replies[conn] = append(replies[conn], b.Bytes())
				}
			}
		}
		for _, conn := range order {
			if err := s.cfg.Bus.Publish(ctx, bus.Downward(conn), replies[conn]...); err != nil {
				// The votes are counted; an unacknowledged vote is resent
				// by its player after a reconnect and acked then.
				s.log.Warn("sending acks failed", "conn", conn, "err", err)
				continue
			}
			s.metrics.sent.Add(float64(len(replies[conn])))
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// pacer pushes results to poll audiences. A group's members get at most
// one results message per AudienceInterval, whatever the number of polls
// aimed at them: with several changed polls, the one whose audience has
// waited longest goes next. Each message is encoded once and published
// once per connection server.
func (s *Server) pacer(ctx context.Context) {
	tick := time.NewTicker(min(s.cfg.AudienceInterval/4, 50*time.Millisecond))
	defer tick.Stop()
	lastPush := map[string]time.Time{} // group → last results push
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := s.now()
		type push struct {
			group string
			msg   control.Results
		}
		next := map[string]*pollState{}
		s.mu.Lock()
		for _, ps := range s.polls {
			if ps.poll.State != polls.StateOpen || now.Sub(lastPush[ps.poll.Group]) < s.cfg.AudienceInterval {
				continue
			}
			if _, _, version := ps.tally.Counts(); version == ps.pushed {
				continue
			}
			if cur := next[ps.poll.Group]; cur == nil || ps.pushedAt.Before(cur.pushedAt) {
				next[ps.poll.Group] = ps
			}
		}
		var pushes []push
		for g, ps := range next {
			counts, total, version := ps.tally.Counts()
			ps.pushed, ps.pushedAt = version, now
			lastPush[g] = now
			pushes = append(pushes, push{g, control.Results{Poll: ps.poll.ID, Counts: counts, Total: total}})
		}
		for g, at := range lastPush {
			if now.Sub(at) > time.Minute {
				delete(lastPush, g)
			}
		}
		s.mu.Unlock()
		for _, p := range pushes {
			if err := s.PublishGroup(ctx, p.group, p.msg, false); err != nil && ctx.Err() == nil {
				s.log.Warn("pushing results failed", "poll", p.msg.Poll, "err", err)
			}
			s.metrics.resultsPushed.Inc()
		}
	}
}

// CreatePoll validates a spec, stores the poll and sends it to its
// audience: a predicate-targeted poll first gets a delivery group defined
// on every connection server.
func (s *Server) CreatePoll(ctx context.Context, spec polls.Spec) (polls.Poll, error) {
	p, err := polls.New(spec, s.now(), media.ValidStreamName)
	if err != nil {
		return polls.Poll{}, err
	}
	if err := s.savePoll(ctx, *p); err != nil {
		return polls.Poll{}, err
	}
	ps := s.newPollState(*p)
	s.mu.Lock()
	s.polls[p.ID] = ps
	s.mu.Unlock()
	if p.Where != nil {
		g := groups.Group{ID: p.Group, Pred: p.Audience()}
		if _, err := s.index.Define(g); err != nil {
			return polls.Poll{}, fmt.Errorf("defining the poll's group: %w", err)
		}
		s.toAllConns(ctx, groups.DefineGroup(g).Encode())
	}
	s.schedule(ps)
	if err := s.PublishGroup(ctx, p.Group, pollMessage(*p, nil), true); err != nil {
		s.log.Warn("sending a poll failed", "poll", p.ID, "err", err)
	}
	s.metrics.pollsCreated.Inc()
	return *p, nil
}

// schedule arms the timer of a timed poll.
func (s *Server) schedule(ps *pollState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ps.poll.ClosesAt == nil || ps.poll.State != polls.StateOpen {
		return
	}
	id := ps.poll.ID
	ps.timer = time.AfterFunc(time.Until(*ps.poll.ClosesAt), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := s.ClosePoll(ctx, id); err != nil && !errors.Is(err, errNoPoll) {
			s.log.Warn("closing a timed poll failed", "poll", id, "err", err)
		}
	})
}

func (s *Server) stopTimers() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ps := range s.polls {
		if ps.timer != nil {
			ps.timer.Stop()
		}
	}
}

var errNoPoll = errors.New("no such poll")

// ClosePoll closes a poll (closing a closed one changes nothing) and sends
// the final results to its audience.
func (s *Server) ClosePoll(ctx context.Context, id string) (polls.Poll, error) {
	s.mu.Lock()
	ps := s.polls[id]
	if ps == nil {
		s.mu.Unlock()
		return polls.Poll{}, errNoPoll
	}
	if ps.poll.State == polls.StateClosed {
		p := ps.poll
		s.mu.Unlock()
		return p, nil
	}
	if ps.timer != nil {
		ps.timer.Stop()
	}
	now := s.now().UTC()
	ps.poll.State = polls.StateClosed
	ps.poll.ClosedAt = &now
	if ps.poll.ClosesAt != nil && ps.poll.ClosesAt.Before(now) {
		// Timed polls end at their deadline, not when the timer ran.
		ps.poll.ClosedAt = ps.poll.ClosesAt
	}
	p := ps.poll
	ps.closed.Store(true)
	ps.notify()
	s.mu.Unlock()
	if err := s.savePoll(ctx, p); err != nil {
		s.log.Warn("saving a closed poll failed", "poll", id, "err", err)
	}
	counts, total, _ := ps.tally.Counts()
	err := s.PublishGroup(ctx, p.Group, control.Results{Poll: id, Counts: counts, Total: total, Final: true}, true)
	s.mu.Lock()
	ps.final = true
	s.mu.Unlock()
	if p.Where != nil {
		// Its final results are out; the delivery group is no longer needed.
		s.index.Undefine(p.Group)
		s.toAllConns(ctx, groups.UndefineGroup(p.Group).Encode())
	}
	s.metrics.pollsClosed.Inc()
	return p, err
}

func (s *Server) savePoll(ctx context.Context, p polls.Poll) error {
	doc, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return s.store.Put(ctx, kindPoll, p.ID, doc)
}

// toAllConns publishes one mirror message to every connection server this
// server knows.
func (s *Server) toAllConns(ctx context.Context, data []byte) {
	s.mu.Lock()
	conns := s.connsLocked()
	s.mu.Unlock()
	for _, c := range conns {
		if err := s.cfg.Bus.Publish(ctx, bus.Downward(c), data); err != nil {
			s.log.Warn("publishing to a connection server failed", "conn", c, "err", err)
			continue
		}
		s.metrics.sent.Inc()
	}
}

func pollMessage(p polls.Poll, choice *int) control.Poll {
	m := control.Poll{ID: p.ID, Stream: p.Stream, Question: p.Question, Choices: p.Choices, State: p.State, Choice: choice}
	if p.ClosesAt != nil {
		m.ClosesAt = p.ClosesAt.UnixMilli()
	}
	return m
}

// sendStreamState sends a link that starts watching what the stream's
// audience already has: branding, open polls aimed at it (with the user's
// own vote) and their latest results.
func (s *Server) sendStreamState(p *profile, stream string, out *outbox) {
	attrs, _ := s.index.Attrs(p.sid)
	s.mu.Lock()
	b, hasBranding := s.branding[stream]
	var open []*pollState
	for _, ps := range s.polls {
		if ps.poll.Stream == stream && ps.poll.Open(s.now()) && ps.poll.Audience().Match(attrs) {
			open = append(open, ps)
		}
	}
	s.mu.Unlock()
	if hasBranding {
		out.add(p.conn, groups.SendLink(p.sid, control.Encode(b), true))
	}
	slices.SortFunc(open, func(a, b *pollState) int { return a.poll.Created.Compare(b.poll.Created) })
	for _, ps := range open {
		var choice *int
		if c, ok := ps.tally.Choice(p.voter); ok {
			choice = &c
		}
		out.add(p.conn, groups.SendLink(p.sid, control.Encode(pollMessage(ps.poll, choice)), true))
		counts, total, _ := ps.tally.Counts()
		out.add(p.conn, groups.SendLink(p.sid, control.Encode(control.Results{Poll: ps.poll.ID, Counts: counts, Total: total}), false))
	}
}

// audioNote says why a live stream's audio cannot be played over WebRTC,
// or "" when it can (or nothing is known).
func (s *Server) audioNote(stream string) string {
	s.mu.Lock()
	info, ok := s.live[stream]
	s.mu.Unlock()
	if !ok {
		return ""
	}
	for _, t := range info.Tracks {
		if t.Kind != "audio" {
			continue
		}
		switch codec := lowerCodec(t.Codec); codec {
		case "opus", "pcmu", "pcma", "g722":
		default:
			return codec + ": not playable over WebRTC, use hls"
		}
	}
	return ""
}

func lowerCodec(mime string) string {
	b := []byte(mime)
	if i := slices.Index(b, '/'); i >= 0 {
		b = b[i+1:]
	}
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	switch string(b) {
	case "mpeg4-generic", "mp4a-latm":
		return "aac"
	}
	return string(b)
}

// load restores polls (with their tallies rebuilt from the stored votes),
// custom groups and branding.
func (s *Server) load(ctx context.Context) error {
	docs, err := s.store.List(ctx, kindPoll)
	if err != nil {
		return err
	}
	for id, d := range docs {
		var p polls.Poll
		if err := json.Unmarshal(d, &p); err != nil || p.ID != id || len(p.Choices) == 0 {
			s.log.Warn("skipping a corrupt stored poll", "poll", id, "err", err)
			continue
		}
		ps := s.newPollState(p)
		n := 0
		if err := s.store.Votes(ctx, id, func(v store.Vote) {
			if v.Choice >= 0 && v.Choice < len(p.Choices) {
				ps.tally.Apply(v.User, v.Choice, v.Attrs)
				n++
			}
		}); err != nil {
			return fmt.Errorf("votes of poll %s: %w", id, err)
		}
		if p.State == polls.StateClosed {
			ps.final = true
		} else if p.Where != nil {
			if _, err := s.index.Define(groups.Group{ID: p.Group, Pred: p.Audience()}); err != nil {
				s.log.Warn("restoring a poll's group", "poll", id, "err", err)
			}
		}
		s.polls[id] = ps
		s.schedule(ps)
		s.log.Debug("poll restored", "poll", id, "state", p.State, "votes", n)
	}
	gdocs, err := s.store.List(ctx, kindGroup)
	if err != nil {
		return err
	}
	for id, d := range gdocs {
		pred, err := groups.ParsePredicateJSON(d)
		if err == nil {
			_, err = s.index.Define(groups.Group{ID: id, Pred: pred})
		}
		if err != nil {
			s.log.Warn("skipping a corrupt stored group", "group", id, "err", err)
		}
	}
	bdocs, err := s.store.List(ctx, kindBranding)
	if err != nil {
		return err
	}
	for stream, d := range bdocs {
		var b control.Branding
		if err := json.Unmarshal(d, &b); err != nil {
			s.log.Warn("skipping corrupt stored branding", "stream", stream, "err", err)
			continue
		}
		s.branding[stream] = b
	}
	return nil
}

// watchResets re-pushes, after each reset of the bus's shared state, what
// connection servers and the store may have lost with it.
func (s *Server) watchResets(ctx context.Context, resets <-chan struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-resets:
			if !ok {
				return
			}
		}
		s.log.Info("bus reset: re-pushing group definitions, attributes and stream status")
		s.repush(ctx)
		if err := s.resave(ctx); err != nil {
			s.log.Warn("re-saving state after a reset", "err", err)
		}
	}
}

// repush sends every connection server the custom groups, its links'
// derived attributes, and the current stream status of live streams.
func (s *Server) repush(ctx context.Context) {
	var out outbox
	defs := s.index.CustomGroups()
	s.mu.Lock()
	for _, c := range s.connsLocked() {
		for _, g := range defs {
			out.add(c, groups.DefineGroup(g))
		}
	}
	for sid, p := range s.profiles {
		if attrs, ok := s.index.Attrs(sid); ok {
			delete(attrs, groups.AttrConn)
			out.add(p.conn, groups.SetAttrs(sid, attrs))
		}
	}
	live := make([]string, 0, len(s.live))
	for name := range s.live {
		live = append(live, name)
	}
	s.mu.Unlock()
	if err := s.send(ctx, &out); err != nil {
		s.log.Warn("re-pushing state failed", "err", err)
	}
	for _, name := range live {
		if err := s.PublishGroup(ctx, groups.AutoID(groups.AttrStream, name), control.StreamStatus{Stream: name, State: control.StateLive}, true); err != nil {
			s.log.Warn("re-pushing stream status failed", "stream", name, "err", err)
		}
	}
}

// resave writes everything this server holds to the store again, for a
// store that shares the bus's fate (Redis restarted empty).
func (s *Server) resave(ctx context.Context) error {
	var errs []error
	s.mu.Lock()
	states := make([]*pollState, 0, len(s.polls))
	for _, ps := range s.polls {
		states = append(states, ps)
	}
	brands := make([]control.Branding, 0, len(s.branding))
	for _, b := range s.branding {
		brands = append(brands, b)
	}
	s.mu.Unlock()
	for _, ps := range states {
		s.mu.Lock()
		p := ps.poll
		s.mu.Unlock()
		errs = append(errs, s.savePoll(ctx, p))
		var votes []store.Vote
		ps.tally.Each(func(user string, choice int, attrs groups.Attrs) {
			votes = append(votes, store.Vote{Poll: p.ID, User: user, Choice: choice, Attrs: attrs})
			if len(votes) == 4096 {
				errs = append(errs, s.store.SaveVotes(ctx, votes))
				votes = votes[:0]
			}
		})
		errs = append(errs, s.store.SaveVotes(ctx, votes))
	}
	for _, g := range s.index.CustomGroups() {
		if !isPollGroup(g.ID) {
			errs = append(errs, s.store.Put(ctx, kindGroup, g.ID, []byte(g.Pred.JSON())))
		}
	}
	for _, b := range brands {
		doc, _ := json.Marshal(b)
		errs = append(errs, s.store.Put(ctx, kindBranding, b.Stream, doc))
	}
	errs = append(errs, s.keys.Resave(ctx))
	return errors.Join(errs...)
}

func isPollGroup(id string) bool {
	return len(id) > len(polls.GroupIDPrefix) && id[:len(polls.GroupIDPrefix)] == polls.GroupIDPrefix
}

// itoa is strconv.Itoa, short.
func itoa(n int) string { return strconv.Itoa(n) }
