package bus

import (
	"context"
	"sort"
	"strconv"
	"sync"
	"time"
)

// MemoryOptions tune the in-process bus.
type MemoryOptions struct {
	MaxBatch   int           // most messages per delivered batch (default 256)
	RetryDelay time.Duration // wait before redelivering a failed batch (default 50 ms)
	MaxLen     int           // most messages a topic retains, read or not (default 1<<20)
	// Retention is how long a message stays after every group has
	// acknowledged it (default 1 min), so that a group created a little
	// later, such as a restarted consumer's, still finds it.
	Retention time.Duration
}

// Memory is the in-process Bus of the embedded deployment.
type Memory struct {
	opts   MemoryOptions
	mu     sync.Mutex
	topics map[string]*memTopic
	closed chan struct{}
	done   bool
}

type memTopic struct {
	base   uint64   // offset of log[0]
	log    [][]byte // retained messages
	times  []int64  // publish time of each retained message, unix ns
	groups map[string]*memGroup
	wake   chan struct{} // closed and replaced on every publish
}

type memGroup struct {
	next     uint64             // next offset never delivered to this group
	retry    []memBatch         // batches whose consumer left without acking
	inflight map[*memBatch]bool // batches being handled
}

type memBatch struct {
	first uint64
	n     int
}

// NewMemory returns an in-process bus with default options.
func NewMemory() *Memory { return NewMemoryWith(MemoryOptions{}) }

// NewMemoryWith returns an in-process bus with the given options.
func NewMemoryWith(o MemoryOptions) *Memory {
	if o.MaxBatch <= 0 {
		o.MaxBatch = 256
	}
	if o.RetryDelay <= 0 {
		o.RetryDelay = 50 * time.Millisecond
	}
	if o.MaxLen <= 0 {
		o.MaxLen = 1 << 20
	}
	if o.Retention <= 0 {
		o.Retention = time.Minute
	}
	return &Memory{opts: o, topics: make(map[string]*memTopic), closed: make(chan struct{})}
}

func (b *Memory) topic(name string) *memTopic {
	t := b.topics[name]
	if t == nil {
		t = &memTopic{groups: make(map[string]*memGroup), wake: make(chan struct{})}
		b.topics[name] = t
	}
	return t
}

// Publish implements Bus.
func (b *Memory) Publish(ctx context.Context, topic string, msgs ...[]byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return ErrClosed
	}
	if len(msgs) == 0 {
		return nil
	}
	t := b.topic(topic)
	t.log = append(t.log, msgs...)
	now := time.Now().UnixNano()
	for range msgs {
		t.times = append(t.times, now)
	}
	if over := len(t.log) - b.opts.MaxLen; over > 0 {
		// Like Redis MAXLEN: the oldest go, read or not.
		t.drop(over)
	}
	close(t.wake)
	t.wake = make(chan struct{})
	return nil
}

// drop forgets the n oldest messages.
func (t *memTopic) drop(n int) {
	clear(t.log[:n])
	t.log = t.log[n:]
	t.times = t.times[n:]
	t.base += uint64(n)
	for _, g := range t.groups {
		if g.next < t.base {
			g.next = t.base
		}
	}
}

// trim forgets messages every group has acknowledged and that are older
// than the retention.
func (t *memTopic) trim(retention time.Duration) {
	if len(t.groups) == 0 {
		return
	}
	low := t.base + uint64(len(t.log))
	for _, g := range t.groups {
		low = min(low, g.next)
		for _, r := range g.retry {
			low = min(low, r.first)
		}
		for r := range g.inflight {
			low = min(low, r.first)
		}
	}
	n := int(low - t.base)
	cutoff := time.Now().Add(-retention).UnixNano()
	n = sort.Search(n, func(i int) bool { return t.times[i] > cutoff })
	if n > 0 && n >= len(t.log)/2 {
		t.drop(n)
	}
}

// Subscribe implements Bus.
func (b *Memory) Subscribe(ctx context.Context, topic, group string, h Handler) error {
	b.mu.Lock()
	if b.done {
		b.mu.Unlock()
		return ErrClosed
	}
	t := b.topic(topic)
	g := t.groups[group]
	if g == nil {
		g = &memGroup{next: t.base, inflight: make(map[*memBatch]bool)}
		t.groups[group] = g
	}
	b.mu.Unlock()

	for {
		batch, msgs, wake, err := b.take(ctx, t, g)
		if err != nil {
			return err
		}
		if batch == nil {
			select {
			case <-wake:
				continue
			case <-ctx.Done():
				return ctx.Err()
			case <-b.closed:
				return ErrClosed
			}
		}
		for {
			herr := h(ctx, msgs)
			if herr == nil {
				b.settle(t, g, batch, true)
				break
			}
			// Unacknowledged: redeliver after a pause, unless this consumer
			// is leaving, in which case another one of the group takes it.
			select {
			case <-time.After(b.opts.RetryDelay):
				continue
			case <-ctx.Done():
				b.settle(t, g, batch, false)
				return ctx.Err()
			case <-b.closed:
				b.settle(t, g, batch, false)
				return ErrClosed
			}
		}
	}
}

// take hands out the next batch for g, or the channel to wait on when there
// is none.
func (b *Memory) take(ctx context.Context, t *memTopic, g *memGroup) (*memBatch, []Message, <-chan struct{}, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return nil, nil, nil, ErrClosed
	}
	var batch *memBatch
	for len(g.retry) > 0 && batch == nil {
		r := g.retry[0]
		g.retry = g.retry[1:]
		// Messages dropped by MaxLen meanwhile are gone for good.
		if end := r.first + uint64(r.n); end > t.base {
			if r.first < t.base {
				r.n -= int(t.base - r.first)
				r.first = t.base
			}
			batch = &r
		}
	}
	if batch == nil {
		if g.next < t.base {
			g.next = t.base
		}
		avail := int(t.base + uint64(len(t.log)) - g.next)
		if avail == 0 {
			return nil, nil, t.wake, nil
		}
		batch = &memBatch{first: g.next, n: min(avail, b.opts.MaxBatch)}
		g.next += uint64(batch.n)
	}
	g.inflight[batch] = true
	msgs := make([]Message, batch.n)
	for i := range msgs {
		off := batch.first + uint64(i)
		msgs[i] = Message{ID: strconv.FormatUint(off, 10), Data: t.log[off-t.base]}
	}
	return batch, msgs, nil, nil
}

// settle acknowledges a batch or returns it to its group for redelivery.
func (b *Memory) settle(t *memTopic, g *memGroup, batch *memBatch, acked bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(g.inflight, batch)
	if !acked {
		g.retry = append(g.retry, *batch)
		close(t.wake)
		t.wake = make(chan struct{})
		return
	}
	t.trim(b.opts.Retention)
}

// Close implements Bus.
func (b *Memory) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.done {
		b.done = true
		close(b.closed)
	}
	return nil
}

// Retained returns how many messages a topic still holds, for tests and
// metrics.
func (b *Memory) Retained(topic string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if t := b.topics[topic]; t != nil {
		return len(t.log)
	}
	return 0
}
