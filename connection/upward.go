package connection

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/backchannel/backchannel/groups"
	"github.com/backchannel/backchannel/internal/bus"
)

// upward batches mirror messages for the application tier. A flush is
// scheduled when the first message of a batch arrives, so an idle server has
// no timer and no goroutine, and no message waits longer than FlushDelay
// (plus bus time) unless the bus fails.
//
// Votes, the bulk of what goes up, are not mirror messages of their own:
// consecutive votes share one binary OpVotes message, which keeps its place
// among the others (a link's open and watch go up before its votes).
type upward struct {
	s       *Server
	flushMu sync.Mutex // one flush at a time keeps the order
	mu      sync.Mutex
	pending [][]byte          // encoded messages, in order
	votes   *groups.VoteBatch // the batch being filled, after pending
	batch   uint64            // its number
	links   []*link           // the link of each of its votes
	nvotes  int               // votes in pending batches and in votes
	// nextBatch numbers vote batches; it starts at random, so that a
	// commit report meant for an earlier run of this server (same id,
	// redelivered by the bus) names no batch of this one.
	nextBatch uint64
	// lastLen sizes the next vote batch: the bytes of the largest recent
	// one, decaying, since a round's batch can be a few times the size of
	// a timer's and growing a batch copies it (to fresh, faulting pages).
	lastLen int
	timer   *time.Timer
	// immediate: the timer is an immediate flush, which takes everything
	// added before it runs; a full batch must not schedule another (each
	// vote past the limit did: a timer and a goroutine per vote while the
	// flush waited for a processor).
	immediate bool
	stopped   bool
}

// Batches larger than these are flushed at once; pending messages beyond
// maxPending (the bus is failing) drop the oldest. A poller round that
// leaves roundFlushVotes or more votes waiting relays them when it ends
// (see roundEnd).
const (
	maxUpBatch      = 512
	maxUpVotes      = 4096
	maxPending      = 100_000
	voteSizeHint    = 64
	roundFlushVotes = 1024
)

func newUpward(s *Server) *upward {
	return &upward{s: s, nextBatch: rand.Uint64()>>1 | 1}
}

func (u *upward) add(m groups.Mirror) {
	b := m.Encode()
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.stopped {
		return
	}
	u.closeVotesLocked()
	u.pending = append(u.pending, b)
	if over := len(u.pending) - maxPending; over > 0 {
		u.pending = u.pending[over:]
		u.s.metrics.busErrors.Add(float64(over))
	}
	u.scheduleLocked(len(u.pending) >= maxUpBatch)
}

// addVote relays one vote of link l (sid); poll and id are copied. A
// numbered batch does not carry the user: the application tier knows it
// from the link's open.
func (u *upward) addVote(l *link, sid string, poll []byte, choice int, id []byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.stopped {
		return
	}
	if u.votes == nil {
		u.batch = u.nextBatch
		u.nextBatch++
		u.votes = groups.NewVoteBatch(u.s.cfg.ID, u.batch, max(voteSizeHint, u.lastLen/96)) // ~lastLen bytes: a large one is zeroed
		u.links = make([]*link, 0, max(voteSizeHint, u.lastLen/64))
	}
	u.votes.Add(sid, "", poll, choice, id)
	u.links = append(u.links, l)
	u.nvotes++
	u.scheduleLocked(u.nvotes >= maxUpVotes)
}

// closeVotesLocked ends the batch being filled, so that what comes next
// is relayed after it; its votes wait for their commit (ackWaits) from
// before it is relayed.
func (u *upward) closeVotesLocked() {
	if u.votes != nil {
		b := u.votes.Bytes()
		u.pending = append(u.pending, b)
		u.lastLen = max(len(b)+len(b)/4, u.lastLen-u.lastLen/8)
		if dropped := u.s.acks.expect(u.batch, b, u.links); dropped > 0 {
			u.s.metrics.acksDropped.Add(float64(dropped))
		}
		u.votes, u.links = nil, nil
	}
}

func (u *upward) scheduleLocked(now bool) {
	switch {
	case u.immediate:
	case now:
		u.stopTimerLocked()
		u.timer, u.immediate = time.AfterFunc(0, u.flush), true
	case u.timer == nil:
		u.timer = time.AfterFunc(u.s.cfg.FlushDelay, u.flush)
	}
}

// stopTimerLocked cancels the scheduled flush, if any; callers hold mu.
func (u *upward) stopTimerLocked() {
	if u.timer != nil {
		u.timer.Stop()
	}
	u.timer, u.immediate = nil, false
}

// roundEnd relays the votes a busy poller round gathered, on the poller's
// goroutine, once it has read what was ready: waiting for the flush
// timer's goroutine cost them ~30 ms on average at 100,000 votes/s, since
// that goroutine waits for a processor behind the pollers. Fewer votes
// keep waiting for the timer, so that a quiet server does not publish a
// batch per round.
//
// The poller does not wait for a flush already under way (the timer's):
// the votes then go at the next round's end or with the timer. With a
// Redis bus the publish is a round trip on the poller's goroutine, at most
// once per roundFlushVotes votes.
func (u *upward) roundEnd() {
	u.mu.Lock()
	n := u.nvotes
	u.mu.Unlock()
	if n >= roundFlushVotes && u.flushMu.TryLock() {
		defer u.flushMu.Unlock()
		u.flushHeld()
	}
}

func (u *upward) flush() {
	u.flushMu.Lock()
	defer u.flushMu.Unlock()
	u.flushHeld()
}

// flushHeld publishes what is pending; callers hold flushMu.
func (u *upward) flushHeld() {
	u.mu.Lock()
	u.closeVotesLocked()
	batch := u.pending
	votes := u.nvotes
	u.pending, u.nvotes = nil, 0
	// A flush not called by the timer (roundEnd, stop) leaves it nothing
	// to do.
	u.stopTimerLocked()
	u.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := u.s.cfg.Bus.Publish(ctx, bus.Upward, batch...); err != nil {
		u.s.metrics.busErrors.Inc()
		u.s.log.Warn("relaying upward failed; will retry", "messages", len(batch), "err", err)
		u.mu.Lock()
		if !u.stopped {
			u.pending = append(batch, u.pending...)
			u.nvotes += votes
			if u.timer == nil {
				u.timer = time.AfterFunc(250*time.Millisecond, u.flush)
			}
		}
		u.mu.Unlock()
		return
	}
	u.s.metrics.votesUp.Add(float64(votes))
}

// stop flushes what is pending, once, and prevents further flushes.
func (u *upward) stop(ctx context.Context) {
	u.mu.Lock()
	u.stopTimerLocked()
	u.mu.Unlock()
	u.flush()
	u.mu.Lock()
	u.stopped = true
	u.stopTimerLocked()
	u.pending, u.votes = nil, nil
	u.mu.Unlock()
}
