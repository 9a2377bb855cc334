package connection

import (
	"sync"

	"github.com/backchannel/backchannel/groups"
	"github.com/backchannel/backchannel/internal/bus"
	"github.com/backchannel/backchannel/internal/control"
)

// ackWaits keeps each relayed vote batch, and the link of each of its
// votes, until the application tier names the batch in an OpCommitted
// message: its votes are durable, and this server acks them itself. The
// application tier sends one small message per commit instead of an ack
// per vote, and the acks find their links without a lookup by sid.
//
// A batch the application tier never names (its server died before the
// commit, and the bus redelivers the batch to another one, which names it
// then; or the bus lost it) waits until newer batches push it out
// (maxWaitingVotes): its votes are then acked only when their players
// resend them after reconnecting, as with any lost ack.
type ackWaits struct {
	mu      sync.Mutex
	batches map[uint64]waitingBatch
	order   []uint64 // batch numbers, oldest first; some already taken
	votes   int      // in batches
}

type waitingBatch struct {
	data  []byte  // the OpVotes message, read again for the vote ids
	links []*link // the link of each vote, in order
}

// maxWaitingVotes bounds the votes waiting for their commit: at 100,000
// votes a second, ten seconds of them.
const maxWaitingVotes = 1 << 20

// expect records the batch numbered batch (data, with one link per vote)
// and returns how many votes of older batches it pushed out.
func (a *ackWaits) expect(batch uint64, data []byte, links []*link) (dropped int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.batches == nil {
		a.batches = make(map[uint64]waitingBatch)
	}
	a.batches[batch] = waitingBatch{data: data, links: links}
	a.order = append(a.order, batch)
	a.votes += len(links)
	for len(a.order) > 0 {
		old, ok := a.batches[a.order[0]]
		if ok && a.votes <= maxWaitingVotes {
			break
		}
		if ok {
			delete(a.batches, a.order[0])
			a.votes -= len(old.links)
			dropped += len(old.links)
		}
		a.order[0] = 0
		a.order = a.order[1:]
	}
	return dropped
}

// take removes and returns the batch numbered batch, if it waits.
func (a *ackWaits) take(batch uint64) (waitingBatch, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	w, ok := a.batches[batch]
	if ok {
		delete(a.batches, batch)
		a.votes -= len(w.links)
	}
	return w, ok
}

// waiting returns the number of votes waiting for their commit.
func (a *ackWaits) waiting() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.votes
}

// commitScratch is what applyCommitted reuses from one message to the next.
type commitScratch struct {
	batches []groups.CommittedBatch
	votes   []groups.VoteRef
	ack     []byte
	frame   []byte
}

var commitScratchPool = sync.Pool{New: func() any { return new(commitScratch) }}

// applyCommitted acks the votes of the batches an OpCommitted message
// names, but those the application tier refused (and answered with an
// error).
func (s *Server) applyCommitted(bm bus.Message) {
	sc := commitScratchPool.Get().(*commitScratch)
	defer commitScratchPool.Put(sc)
	var err error
	sc.batches, err = groups.DecodeCommitted(bm.Data, sc.batches[:0])
	if err != nil {
		s.metrics.busErrors.Inc()
		s.log.Warn("skipping a bad commit message", "id", bm.ID, "err", err)
		return
	}
	acked := 0
	for _, cb := range sc.batches {
		w, ok := s.acks.take(cb.Batch)
		if !ok {
			// Named twice (the batch was redelivered and committed again),
			// or pushed out while waiting.
			s.metrics.commitsUnmatched.Inc()
			continue
		}
		_, _, votes, err := groups.DecodeVotes(w.data, sc.votes[:0])
		sc.votes = votes
		if err != nil || len(votes) != len(w.links) {
			// Our own encoding: cannot happen short of a bug.
			s.log.Error("a waiting vote batch does not decode", "batch", cb.Batch, "votes", len(votes), "links", len(w.links), "err", err)
			continue
		}
		refused := cb.Refused
		for i, v := range votes {
			if len(refused) > 0 && refused[0] == i {
				refused = refused[1:]
				continue
			}
			sc.ack = control.AppendAck(sc.ack[:0], v.ID)
			sc.frame = w.links[i].deferOne(sc.frame, sc.ack)
			acked++
		}
		clear(votes)
	}
	s.metrics.linkSends.Add(float64(acked))
	s.metrics.votesAcked.Add(float64(acked))
	clear(sc.batches)
}
