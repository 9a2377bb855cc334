package bus

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// outTopic is the outbox of one topic: what this process published there
// and no live group has confirmed yet.
type outTopic struct {
	seq       uint64     // last sequence number given out (they start at 1)
	sent      uint64     // highest number written in the current epoch
	confirmed uint64     // every live group handled up to here
	entries   []outEntry // numbers above confirmed, ascending
	groups    map[string]int64
}

type outEntry struct {
	seq  uint64
	data []byte
	at   time.Time
}

// unsent returns the index of the first entry not yet written.
func (t *outTopic) unsent() int {
	return sort.Search(len(t.entries), func(i int) bool { return t.entries[i].seq > t.sent })
}

// Publish implements Bus. The messages go to the outbox at once and get
// their origin sequence numbers there; Publish then waits, at most until ctx
// ends, for them to be written to Redis, unless Redis is unreachable, in
// which case they wait in the outbox. Either way they are accepted: nil
// means they will be delivered as long as this process lives. An error
// means none of them was accepted.
func (b *Redis) Publish(ctx context.Context, topic string, msgs ...[]byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.outMu.Lock()
	if b.done {
		b.outMu.Unlock()
		return ErrClosed
	}
	if len(msgs) == 0 {
		b.outMu.Unlock()
		return nil
	}
	if b.outCount+len(msgs) > b.opts.OutboxLimit {
		b.outMu.Unlock()
		return fmt.Errorf("%w: %d messages wait for confirmation", ErrOutboxFull, b.outCount)
	}
	t := b.topics[topic]
	if t == nil {
		t = &outTopic{groups: make(map[string]int64)}
		b.topics[topic] = t
	}
	now := time.Now()
	for _, m := range msgs {
		t.seq++
		t.entries = append(t.entries, outEntry{seq: t.seq, data: m, at: now})
	}
	last := t.seq
	b.outCount += len(msgs)
	b.m.outbox.Set(float64(b.outCount))
	b.outMu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
	for {
		b.outMu.Lock()
		written := t.sent >= last || b.done
		flushed := b.flushed
		b.outMu.Unlock()
		if written || b.down.Load() {
			return nil
		}
		select {
		case <-flushed:
		case <-ctx.Done():
			return nil
		}
	}
}

// notifyFlushedLocked wakes publishers waiting for their write.
func (b *Redis) notifyFlushedLocked() {
	close(b.flushed)
	b.flushed = make(chan struct{})
}

// writer writes the outbox to Redis: it collects publishes for FlushDelay
// (or until MaxPipeline are waiting) and sends them as one pipeline, one
// script call per topic and chunk. It is the only writer, which keeps each
// topic's entries in sequence order.
func (b *Redis) writer() {
	defer b.wg.Done()
	var bo backoff
	for {
		select {
		case <-b.wake:
		case <-b.ctx.Done():
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			for {
				if n, err := b.flush(ctx); err != nil || n == 0 {
					break
				}
			}
			cancel()
			return
		}
		if b.opts.FlushDelay > 0 && b.pending() < b.opts.MaxPipeline {
			sleep(b.ctx, b.opts.FlushDelay)
		}
		for b.ctx.Err() == nil {
			n, err := b.flush(b.ctx)
			if err == nil {
				bo.reset()
				if n == 0 {
					break
				}
				continue
			}
			if b.ctx.Err() != nil {
				break
			}
			switch {
			case isNoScript(err):
				// Scripts vanish with a restart; a reset check reloads
				// them when the database is new, this when it is not.
				for _, s := range allScripts {
					_ = s.Load(b.ctx, b.rdb).Err()
				}
			case isEpoch(err):
			default:
				b.trouble(err)
				sleep(b.ctx, bo.next())
			}
			if err := b.checkEpoch(b.ctx); err != nil {
				sleep(b.ctx, bo.next())
			}
		}
	}
}

// pending counts messages not yet written.
func (b *Redis) pending() int {
	b.outMu.Lock()
	defer b.outMu.Unlock()
	n := 0
	for _, t := range b.topics {
		n += len(t.entries) - t.unsent()
	}
	return n
}

// chunkSize bounds the messages of one script call, so that no call holds
// Redis for long.
const chunkSize = 256

type writeChunk struct {
	t    *outTopic
	last uint64 // sequence number of the chunk's last message
	n    int
}

// flush writes up to MaxPipeline unwritten messages in one round trip and
// returns how many it wrote. Entries the pipeline may or may not have
// written stay unwritten and go again: consumers drop the copy.
func (b *Redis) flush(ctx context.Context) (int, error) {
	b.outMu.Lock()
	epoch, gen := b.epoch, b.gen
	budget := b.opts.MaxPipeline
	pipe := b.rdb.Pipeline()
	var chunks []writeChunk
	for name, t := range b.topics {
		if budget == 0 {
			break
		}
		todo := t.entries[t.unsent():]
		for len(todo) > 0 && budget > 0 {
			n := min(len(todo), chunkSize, budget)
			args := make([]any, 0, 3+2*n)
			args = append(args, epoch, b.opts.MaxLen, b.origin)
			for _, e := range todo[:n] {
				args = append(args, strconv.FormatUint(e.seq, 10), e.data)
			}
			publishScript.EvalSha(ctx, pipe, []string{epochKey, name}, args...)
			chunks = append(chunks, writeChunk{t: t, last: todo[n-1].seq, n: n})
			todo = todo[n:]
			budget -= n
		}
	}
	b.outMu.Unlock()
	if len(chunks) == 0 {
		return 0, nil
	}
	cmds, _ := pipe.Exec(ctx)
	written := 0
	var firstErr error
	failed := make(map[*outTopic]bool)
	b.outMu.Lock()
	for i, c := range chunks {
		err := cmds[i].Err()
		if err != nil || failed[c.t] {
			// Later chunks of a topic whose earlier chunk failed must go
			// again after it, to keep the order.
			failed[c.t] = true
			if firstErr == nil && err != nil {
				firstErr = err
			}
			continue
		}
		written += c.n
		if b.gen == gen && c.last > c.t.sent {
			c.t.sent = c.last
		}
	}
	b.notifyFlushedLocked()
	b.outMu.Unlock()
	b.m.published.Add(float64(written))
	return written, firstErr
}

// confirmer learns, every ConfirmInterval, which groups exist for the topics
// with unconfirmed messages and how far each has handled this origin, and
// drops what all live groups handled. It also notices a reset while the bus
// is idle.
func (b *Redis) confirmer() {
	defer b.wg.Done()
	t := time.NewTicker(b.opts.ConfirmInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-b.ctx.Done():
			return
		}
		ctx, cancel := context.WithTimeout(b.ctx, 2*time.Second)
		if err := b.checkEpochQuick(ctx); err == nil {
			if err := b.confirm(ctx); err != nil {
				b.trouble(err)
			}
		}
		cancel()
	}
}

// checkEpochQuick compares the marker with a plain GET and runs the full
// check only when it differs or Redis was unreachable.
func (b *Redis) checkEpochQuick(ctx context.Context) error {
	cur, err := b.rdb.Get(ctx, epochKey).Result()
	b.outMu.Lock()
	known := b.epoch
	b.outMu.Unlock()
	if err == nil && cur == known && !b.down.Load() {
		return nil
	}
	if err != nil && !errors.Is(err, redis.Nil) {
		b.trouble(err)
		return err
	}
	return b.checkEpoch(ctx)
}

func (b *Redis) confirm(ctx context.Context) error {
	b.outMu.Lock()
	var names []string
	for name, t := range b.topics {
		if len(t.entries) > 0 {
			names = append(names, name)
		}
	}
	b.outMu.Unlock()
	if len(names) == 0 {
		return nil
	}
	pipe := b.rdb.Pipeline()
	lists := make([]*redis.MapStringStringCmd, len(names))
	for i, name := range names {
		lists[i] = pipe.HGetAll(ctx, groupsKey(name))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return err
	}
	// Remember every group heard of; consider those heard of lately.
	cutoff := time.Now().Add(-b.opts.GroupTimeout).UnixMilli()
	live := make([][]string, len(names))
	b.outMu.Lock()
	for i, name := range names {
		t := b.topics[name]
		for g, v := range lists[i].Val() {
			if ms, err := strconv.ParseInt(v, 10, 64); err == nil && ms > t.groups[g] {
				t.groups[g] = ms
			}
		}
		for g, ms := range t.groups {
			if ms >= cutoff {
				live[i] = append(live[i], g)
			} else {
				delete(t.groups, g)
			}
		}
	}
	b.outMu.Unlock()
	pipe = b.rdb.Pipeline()
	scores := make([][]*redis.FloatCmd, len(names))
	for i, name := range names {
		for _, g := range live[i] {
			scores[i] = append(scores[i], pipe.ZScore(ctx, handledKey(name, g, b.origin), "~"))
		}
	}
	if pipe.Len() > 0 {
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
	}
	now := time.Now()
	b.outMu.Lock()
	defer b.outMu.Unlock()
	for i, name := range names {
		t := b.topics[name]
		upTo := t.confirmed
		if len(live[i]) == 0 {
			// Nobody is listening: keep messages for a group yet to come
			// for as long as a silent group would be waited for.
			for _, e := range t.entries {
				if now.Sub(e.at) < b.opts.GroupTimeout || e.seq > t.sent {
					break
				}
				upTo = e.seq
			}
			if n := upTo - t.confirmed; n > 0 {
				b.m.outboxDropped.Add(float64(n))
			}
		} else {
			low := ^uint64(0)
			for _, c := range scores[i] {
				low = min(low, uint64(c.Val())) // a missing record is 0
			}
			upTo = max(upTo, low)
		}
		b.confirmLocked(t, upTo)
	}
	return nil
}

// confirmLocked drops the entries up to seq.
func (b *Redis) confirmLocked(t *outTopic, seq uint64) {
	if seq <= t.confirmed {
		return
	}
	n := sort.Search(len(t.entries), func(i int) bool { return t.entries[i].seq > seq })
	clear(t.entries[:n])
	t.entries = t.entries[n:]
	if len(t.entries) == 0 {
		t.entries = nil
	}
	t.confirmed = seq
	t.sent = max(t.sent, seq)
	b.outCount -= n
	b.m.outbox.Set(float64(b.outCount))
}

// Unconfirmed returns how many messages of a topic wait in the outbox, for
// tests and metrics.
func (b *Redis) Unconfirmed(topic string) int {
	b.outMu.Lock()
	defer b.outMu.Unlock()
	if t := b.topics[topic]; t != nil {
		return len(t.entries)
	}
	return 0
}
