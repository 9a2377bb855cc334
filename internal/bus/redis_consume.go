package bus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// ledger returns this process's record of what a group handled.
func (b *Redis) ledger(topic, group string) *groupLedger {
	b.ledMu.Lock()
	defer b.ledMu.Unlock()
	k := [2]string{topic, group}
	l := b.ledgers[k]
	if l == nil {
		l = &groupLedger{topic: topic, group: group, origins: make(map[string]*handled)}
		b.ledgers[k] = l
	}
	return l
}

// Subscribe implements Bus. Each call is its own consumer of the group, named
// uniquely within the process. Entries a consumer took and left unhandled
// (it ended, or its process died) go to another consumer of the group:
// at once when it ended, after ClaimIdle when it died.
func (b *Redis) Subscribe(ctx context.Context, topic, group string, h Handler) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.outMu.Lock()
	if b.done {
		b.outMu.Unlock()
		return ErrClosed
	}
	b.subs.Add(1) // under outMu: Close sets done under it before waiting
	b.outMu.Unlock()
	defer b.subs.Done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(b.ctx, cancel)
	defer stop()
	l := b.ledger(topic, group)
	l.mu.Lock()
	l.active++
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.active--
		l.mu.Unlock()
	}()
	c := &consumer{
		b: b, topic: topic, group: group, l: l, h: h,
		name: b.consumer + "-" + strconv.FormatUint(b.nextCons.Add(1), 10),
	}
	err := c.run(ctx)
	if b.isClosed() {
		return ErrClosed
	}
	return err
}

type consumer struct {
	b            *Redis
	topic, group string
	name         string
	l            *groupLedger
	h            Handler
}

// entry is a stream entry as the bus wrote it: origin, sequence, data.
type entry struct {
	id     string
	origin string // "" when the entry was not written by a Redis bus
	seq    uint64
	data   []byte
}

func (c *consumer) run(ctx context.Context) error {
	b := c.b
	var bo backoff
	ready := false
	var nextClaim, nextBeat time.Time
	beat := max(b.opts.GroupTimeout/4, 10*time.Millisecond)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !ready {
			if err := c.setup(ctx); err != nil {
				b.trouble(err)
				sleep(ctx, bo.next())
				_ = b.checkEpoch(ctx)
				continue
			}
			ready = true
			nextBeat = time.Now().Add(beat)
		}
		if wait := time.Until(time.Unix(0, b.readyAt.Load())); wait > 0 {
			sleep(ctx, wait)
			continue
		}
		now := time.Now()
		if now.After(nextBeat) {
			_ = b.rdb.HSet(ctx, groupsKey(c.topic), c.group, now.UnixMilli()).Err()
			nextBeat = now.Add(beat)
		}
		var msgs []redis.XMessage
		var err error
		claimed := false
		if !now.Before(nextClaim) {
			msgs, _, err = b.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{
				Stream: c.topic, Group: c.group, Consumer: c.name,
				MinIdle: b.opts.ClaimIdle, Start: "0-0", Count: int64(b.opts.MaxBatch),
			}).Result()
			nextClaim = now.Add(b.opts.ClaimInterval)
			if len(msgs) > 0 {
				claimed = true
				nextClaim = now // there may be more
			}
		}
		if err == nil && !claimed {
			var streams []redis.XStream
			streams, err = b.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
				Group: c.group, Consumer: c.name, Streams: []string{c.topic, ">"},
				Count: int64(b.opts.MaxBatch), Block: b.opts.Block,
			}).Result()
			if errors.Is(err, redis.Nil) {
				err = nil
			}
			for _, s := range streams {
				msgs = append(msgs, s.Messages...)
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if isNoGroup(err) {
				// The stream or group is gone: most likely the database
				// was reset, which must be handled before reading again.
				ready = false
			} else {
				b.trouble(err)
				sleep(ctx, bo.next())
			}
			_ = b.checkEpoch(ctx)
			continue
		}
		bo.reset()
		if len(msgs) == 0 {
			continue
		}
		if err := c.deliver(ctx, msgs, claimed); err != nil {
			return err
		}
	}
}

// setup creates the group (reading from the start of the stream) and
// announces it to publishers.
func (c *consumer) setup(ctx context.Context) error {
	b := c.b
	if err := b.rdb.XGroupCreateMkStream(ctx, c.topic, c.group, "0").Err(); err != nil && !isBusyGroup(err) {
		return err
	}
	return b.rdb.HSet(ctx, groupsKey(c.topic), c.group, time.Now().UnixMilli()).Err()
}

func parseEntries(msgs []redis.XMessage) []entry {
	out := make([]entry, 0, len(msgs))
	for _, m := range msgs {
		e := entry{id: m.ID}
		if d, ok := m.Values["d"].(string); ok {
			e.data = []byte(d)
		}
		o, _ := m.Values["o"].(string)
		s, _ := m.Values["s"].(string)
		if seq, err := strconv.ParseUint(s, 10, 64); err == nil && o != "" && seq > 0 {
			e.origin, e.seq = o, seq
		}
		out = append(out, e)
	}
	return out
}

// deliver hands the entries the group has not handled yet to the handler,
// until it accepts them or the consumer leaves, then acknowledges them all.
func (c *consumer) deliver(ctx context.Context, msgs []redis.XMessage, claimed bool) error {
	b := c.b
	entries := parseEntries(msgs)
	var fresh []entry
	var bo backoff
	for {
		var err error
		if fresh, err = c.unhandled(ctx, entries); err == nil {
			break
		}
		// Handing them over unchecked could deliver a duplicate; they
		// are ours until Redis answers or we leave.
		if !sleep(ctx, bo.next()) {
			c.release(entries)
			return ctx.Err()
		}
		_ = b.checkEpoch(ctx)
	}
	if dups := len(entries) - len(fresh); dups > 0 {
		b.m.duplicates.Add(float64(dups))
	}
	if len(fresh) > 0 {
		batch := make([]Message, len(fresh))
		for i, e := range fresh {
			batch[i] = Message{ID: e.id, Data: e.data}
		}
		if claimed {
			b.m.redelivered.Add(float64(len(batch)))
		}
		for {
			err := c.h(ctx, batch)
			if err == nil {
				break
			}
			b.m.redelivered.Add(float64(len(batch)))
			if !sleep(ctx, b.opts.RetryDelay) {
				c.release(entries)
				return ctx.Err()
			}
		}
		c.l.mu.Lock()
		for _, e := range fresh {
			if e.origin != "" {
				c.l.origin(e.origin).add(e.seq)
			}
		}
		c.l.mu.Unlock()
		b.m.delivered.Add(float64(len(fresh)))
	}
	// Acknowledge even when the consumer is leaving: the batch is handled.
	bo.reset()
	for {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		err := c.ack(actx, entries)
		cancel()
		if err == nil {
			return nil
		}
		b.trouble(err)
		if !sleep(ctx, bo.next()) {
			// Still pending in Redis: another consumer will have it
			// again, which handlers tolerate.
			return ctx.Err()
		}
		_ = b.checkEpoch(ctx)
	}
}

// unhandled filters out the entries the group already handled, according
// to this process's ledger, then to the group's record in Redis, and
// repeats within the batch.
func (c *consumer) unhandled(ctx context.Context, entries []entry) ([]entry, error) {
	type check struct {
		key  string
		idx  []int
		seqs []any
	}
	keep := make([]bool, len(entries))
	var checks []*check
	byOrigin := map[string]*check{}
	inBatch := map[string]map[uint64]bool{}
	c.l.mu.Lock()
	for i, e := range entries {
		if e.origin == "" {
			keep[i] = true
			continue
		}
		if c.l.origin(e.origin).has(e.seq) || inBatch[e.origin][e.seq] {
			continue
		}
		if inBatch[e.origin] == nil {
			inBatch[e.origin] = map[uint64]bool{}
		}
		inBatch[e.origin][e.seq] = true
		keep[i] = true
		ck := byOrigin[e.origin]
		if ck == nil {
			ck = &check{key: handledKey(c.topic, c.group, e.origin)}
			byOrigin[e.origin] = ck
			checks = append(checks, ck)
		}
		ck.idx = append(ck.idx, i)
		ck.seqs = append(ck.seqs, strconv.FormatUint(e.seq, 10))
	}
	c.l.mu.Unlock()
	if len(checks) > 0 {
		keys := make([]string, len(checks))
		var args []any
		for i, ck := range checks {
			keys[i] = ck.key
			args = append(args, len(ck.seqs))
			args = append(args, ck.seqs...)
		}
		res, err := seenScript.Run(ctx, c.b.rdb, keys, args...).Slice()
		if err != nil {
			c.b.trouble(err)
			return nil, err
		}
		if len(res) != len(checks) {
			return nil, fmt.Errorf("bus: seen script answered %d records for %d", len(res), len(checks))
		}
		c.l.mu.Lock()
		for i, ck := range checks {
			r, _ := res[i].([]any)
			if len(r) != len(ck.idx)+1 {
				c.l.mu.Unlock()
				return nil, fmt.Errorf("bus: seen script answered %d flags for %d", len(r)-1, len(ck.idx))
			}
			origin := entries[ck.idx[0]].origin
			if p, ok := r[0].(int64); ok && p > 0 {
				c.l.origin(origin).raise(uint64(p))
			}
			for j, idx := range ck.idx {
				if f, _ := r[j+1].(int64); f == 1 {
					keep[idx] = false
				}
			}
		}
		c.l.mu.Unlock()
	}
	fresh := make([]entry, 0, len(entries))
	for i, e := range entries {
		if keep[i] {
			fresh = append(fresh, e)
		}
	}
	return fresh, nil
}

// ack acknowledges the entries and records, in the same script, what the
// group has handled of each origin.
func (c *consumer) ack(ctx context.Context, entries []entry) error {
	keys := []string{c.topic}
	args := []any{c.group, handledTTL.Milliseconds(), len(entries)}
	for _, e := range entries {
		args = append(args, e.id)
	}
	var origins []string
	seqs := map[string][]any{}
	for _, e := range entries {
		if e.origin == "" {
			continue
		}
		if _, ok := seqs[e.origin]; !ok {
			origins = append(origins, e.origin)
		}
		seqs[e.origin] = append(seqs[e.origin], strconv.FormatUint(e.seq, 10))
	}
	c.l.mu.Lock()
	for _, o := range origins {
		keys = append(keys, handledKey(c.topic, c.group, o))
		args = append(args, c.l.origin(o).prefix, len(seqs[o]))
		args = append(args, seqs[o]...)
	}
	c.l.mu.Unlock()
	res, err := ackScript.Run(ctx, c.b.rdb, keys, args...).Slice()
	if err != nil {
		return err
	}
	c.l.mu.Lock()
	for i, o := range origins {
		if i < len(res) {
			if p, ok := res[i].(int64); ok && p > 0 {
				c.l.origin(o).raise(uint64(p))
			}
		}
	}
	c.l.mu.Unlock()
	return nil
}

// release makes entries this consumer took but will not handle claimable by
// the group's other consumers at once, by marking them long idle.
func (c *consumer) release(entries []entry) {
	if len(entries) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	args := []any{"XCLAIM", c.topic, c.group, c.name, 0}
	for _, e := range entries {
		args = append(args, e.id)
	}
	// Idle for longer than any sensible ClaimIdle.
	args = append(args, "IDLE", int64(365*24*time.Hour/time.Millisecond), "JUSTID")
	if err := c.b.rdb.Do(ctx, args...).Err(); err != nil {
		c.b.log.Debug("releasing entries failed; they are claimable after ClaimIdle", "topic", c.topic, "group", c.group, "err", err)
	}
}
