package application

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/backchannel/backchannel/groups"
	"github.com/backchannel/backchannel/internal/bus"
	"github.com/backchannel/backchannel/internal/polls"
	"github.com/backchannel/backchannel/internal/store"
)

// A backlog of votes delivered at once is committed in bounded pieces:
// every vote is counted and acknowledged exactly once, after it is in the
// log, and the acks come in several commits rather than one.
func TestBacklogCommittedInPieces(t *testing.T) {
	const links, msgs = 5000, 5 // 25,000 votes over maxCommitVotes
	c := startCommitting(t, links)
	s, b, ctx := c.s, c.b, c.ctx
	var ps []polls.Poll
	for range msgs {
		p, err := s.CreatePoll(ctx, polls.Spec{Stream: "s", Question: "q?", Choices: []string{"a", "b", "c"}})
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}

	var mu sync.Mutex
	acks := map[string]int{}
	ackMsgs := 0
	done := make(chan struct{})
	subCtx, stopSub := context.WithCancel(ctx)
	go b.Subscribe(subCtx, bus.Downward("c1"), "test", func(_ context.Context, batch []bus.Message) error {
		mu.Lock()
		defer mu.Unlock()
		for _, m := range batch {
			if !groups.IsBatch(m.Data) {
				continue
			}
			sends, err := groups.DecodeSends(m.Data, nil)
			if err != nil {
				t.Error(err)
				continue
			}
			counted := false
			for _, r := range sends {
				id, ok := strings.CutPrefix(string(r.Payload), `{"t":"ack","id":"`)
				if !ok {
					continue
				}
				if !counted {
					ackMsgs++
					counted = true
				}
				acks[strings.TrimSuffix(id, `"}`)]++
			}
		}
		if len(acks) == links*msgs && done != nil {
			close(done)
			done = nil
		}
		return nil
	})
	defer stopSub()

	var votes [][]byte
	for m, p := range ps {
		vb := groups.NewVoteBatch("c1", 0, links)
		for i := range links {
			vb.Add(fmt.Sprintf("l%d", i), fmt.Sprintf("u%d", i), []byte(p.ID), (i+m)%3, fmt.Appendf(nil, "%d.%d", i, m))
		}
		votes = append(votes, vb.Bytes())
	}
	// One publish: the messages are delivered to the application together.
	if err := b.Publish(ctx, bus.Upward, votes...); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	wait := done
	mu.Unlock()
	select {
	case <-wait:
	case <-time.After(30 * time.Second):
		mu.Lock()
		t.Fatalf("%d of %d votes acked", len(acks), links*msgs)
	}
	mu.Lock()
	for id, n := range acks {
		if n != 1 {
			t.Errorf("vote %s acked %d times", id, n)
		}
	}
	if ackMsgs < 2 {
		t.Errorf("%d votes acked in %d commit, want several", links*msgs, ackMsgs)
	}
	mu.Unlock()
	for m, p := range ps {
		s.mu.Lock()
		counts, total, _ := s.polls[p.ID].tally.Counts()
		s.mu.Unlock()
		want := []int64{0, 0, 0}
		for i := range links {
			want[(i+m)%3]++
		}
		if total != links || fmt.Sprint(counts) != fmt.Sprint(want) {
			t.Errorf("poll %d: %v (%d), want %v", m, counts, total, want)
		}
	}
	c.stop()
	// Every acked vote is in the log.
	for _, p := range ps {
		if n := c.logged(t, p.ID); n != links {
			t.Errorf("poll %s: %d votes in the log, want %d", p.ID, n, links)
		}
	}
}

// A numbered vote batch is answered, once its votes are in the log, by one
// report naming it (OpCommitted) with the indexes of the votes not counted,
// which get an error or a resync instead; no vote is acked one by one.
func TestNumberedBatchReportedCommitted(t *testing.T) {
	c := startCommitting(t, 2)
	s, b, ctx := c.s, c.b, c.ctx
	p, err := s.CreatePoll(ctx, polls.Spec{Stream: "s", Question: "q?", Choices: []string{"a", "b"}})
	if err != nil {
		t.Fatal(err)
	}
	down := make(chan groups.Mirror, 100)
	subCtx, stopSub := context.WithCancel(ctx)
	defer stopSub()
	go b.Subscribe(subCtx, bus.Downward("c1"), "test", func(_ context.Context, batch []bus.Message) error {
		for _, m := range batch {
			dm, err := groups.DecodeMirror(m.Data)
			if err != nil {
				t.Error(err)
				continue
			}
			down <- dm
		}
		return nil
	})
	first := groups.Votes("c1", 41, []groups.ClientVote{
		{Link: "l0", UID: "u0", Poll: p.ID, Choice: 0, ID: "a"},
		{Link: "gone", UID: "u9", Poll: p.ID, Choice: 0, ID: "b"}, // unknown link: resync
		{Link: "l1", UID: "u1", Poll: p.ID, Choice: 7, ID: "c"},   // no such choice: error
		{Link: "l1", UID: "u1", Poll: p.ID, Choice: 1, ID: "d"},
	})
	second := groups.Votes("c1", 42, []groups.ClientVote{{Link: "l0", UID: "u0", Poll: p.ID, Choice: 1, ID: "e"}})
	if err := b.Publish(ctx, bus.Upward, first.Encode(), second.Encode()); err != nil {
		t.Fatal(err)
	}
	var committed []groups.CommittedBatch
	var errs, closes int
	for len(committed) < 2 {
		select {
		case m := <-down:
			switch m.Op {
			case groups.OpCommitted:
				committed = append(committed, m.Committed...)
			case groups.OpSends:
				for _, sd := range m.Sends {
					if strings.Contains(string(sd.Payload), `"t":"ack"`) {
						t.Fatalf("a vote of a numbered batch acked one by one: %s", sd.Payload)
					}
					if strings.Contains(string(sd.Payload), `"t":"error"`) && sd.Link == "l1" {
						errs++
					}
				}
			case groups.OpSendLink:
				if strings.Contains(string(m.Payload), `"t":"error"`) && m.Link == "l1" {
					errs++
				}
			case groups.OpCloseLink:
				if m.Link == "gone" {
					closes++
				}
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("reports %+v within 10 s, want batches 41 and 42", committed)
		}
	}
	want := []groups.CommittedBatch{{Batch: 41, Refused: []int{1, 2}}, {Batch: 42}}
	if fmt.Sprint(committed) != fmt.Sprint(want) {
		t.Fatalf("reported %+v, want %+v", committed, want)
	}
	if errs != 1 || closes != 1 {
		t.Fatalf("%d errors to l1 and %d resyncs of the unknown link, want 1 and 1", errs, closes)
	}
	s.mu.Lock()
	counts, total, _ := s.polls[p.ID].tally.Counts()
	s.mu.Unlock()
	if total != 2 || counts[0] != 0 || counts[1] != 2 {
		t.Fatalf("counts %v (%d), want [0 2]: u0 moved to b, u1 chose b", counts, total)
	}
	c.stop()
	// What was reported committed is in the log.
	if n := c.logged(t, p.ID); n != 2 {
		t.Fatalf("%d votes in the log, want 2 (one per user)", n)
	}
}

// committing is an application server with a file store, run until stop,
// and links l0, l1, … of connection server c1 (users u0, u1, …, stream s)
// that it knows.
type committing struct {
	s    *Server
	b    *bus.Memory
	dir  string
	ctx  context.Context
	stop func() // ends the server and closes the store
}

func startCommitting(t *testing.T, links int) *committing {
	t.Helper()
	dir := t.TempDir()
	st, err := store.OpenFile(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	b := bus.NewMemory()
	t.Cleanup(func() { b.Close() })
	s, err := New(Config{Bus: b, Edges: StaticEdge{}, OperatorKey: "k", Store: st})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var run sync.WaitGroup
	run.Add(1)
	go func() { defer run.Done(); s.Run(ctx) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			run.Wait()
			st.Close()
		}
	}
	t.Cleanup(stop)
	var opens [][]byte
	for i := range links {
		opens = append(opens, groups.LinkOpened("c1", fmt.Sprintf("l%d", i), fmt.Sprintf("u%d", i), []string{"s"}, groups.Facts{IP: "10.0.0.1"}, groups.Attrs{groups.AttrStream: "s"}).Encode())
	}
	if err := b.Publish(ctx, bus.Upward, opens...); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		s.mu.Lock()
		n := len(s.profiles)
		s.mu.Unlock()
		if n == links {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d links known", n, links)
		}
	}
	return &committing{s: s, b: b, dir: dir, ctx: ctx, stop: stop}
}

// logged returns how many votes of poll the stopped server's log holds.
func (c *committing) logged(t *testing.T, poll string) int {
	t.Helper()
	st, err := store.OpenFile(c.dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	n := 0
	if err := st.Votes(context.Background(), poll, func(store.Vote) { n++ }); err != nil {
		t.Fatal(err)
	}
	return n
}
