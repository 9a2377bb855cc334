package bus

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// RedisOptions configure the Redis bus. Zero values take the defaults in
// the comments.
type RedisOptions struct {
	Addr     string // host:port of redis-server (required)
	Password string
	DB       int

	// Publishing.
	MaxLen      int64         // approximate entries a topic's stream keeps (XADD MAXLEN ~; 100 000)
	FlushDelay  time.Duration // how long publishes are collected before one pipeline (200 µs; <0: none)
	MaxPipeline int           // most messages per write round trip (1024); 1 writes each message alone
	OutboxLimit int           // most unconfirmed messages kept for republishing (262 144); Publish fails past it

	// Consuming.
	MaxBatch      int           // most messages per delivered batch (256)
	Block         time.Duration // XREADGROUP BLOCK, also the longest a cancelled Subscribe takes to return (500 ms)
	RetryDelay    time.Duration // wait before handing a refused batch to the handler again (50 ms)
	ClaimIdle     time.Duration // how long an entry stays with a consumer that neither acks nor refuses it before another takes it (30 s)
	ClaimInterval time.Duration // how often consumers look for such entries (ClaimIdle/4, at most 5 s)

	// Confirmation and resets.
	ConfirmInterval time.Duration // how often publishers learn what groups handled, and check for a reset (100 ms)
	GroupTimeout    time.Duration // a group unheard of for this long no longer holds messages in outboxes (1 min)
	ResetGrace      time.Duration // consumers wait this long after a reset before reading, so other processes can restore their records (500 ms)

	Origin  string // this publisher's id in entries (random); must be unique among live processes
	Logger  *slog.Logger
	Metrics prometheus.Registerer // nil: a private registry
}

func (o *RedisOptions) setDefaults() {
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	if o.MaxLen <= 0 {
		o.MaxLen = 100_000
	}
	def(&o.FlushDelay, 200*time.Microsecond)
	if o.MaxPipeline <= 0 {
		o.MaxPipeline = 1024
	}
	if o.OutboxLimit <= 0 {
		o.OutboxLimit = 1 << 18
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = 256
	}
	def(&o.Block, 500*time.Millisecond)
	def(&o.RetryDelay, 50*time.Millisecond)
	def(&o.ClaimIdle, 30*time.Second)
	def(&o.ClaimInterval, min(o.ClaimIdle/4, 5*time.Second))
	def(&o.ConfirmInterval, 100*time.Millisecond)
	def(&o.GroupTimeout, time.Minute)
	def(&o.ResetGrace, 500*time.Millisecond)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Metrics == nil {
		o.Metrics = prometheus.NewRegistry()
	}
}

// Keys besides the streams (which are named by their topic).
const (
	epochKey      = "bcbus:epoch"   // marker of the database's life; gone = reset
	groupsPrefix  = "bcbus:groups:" // + topic: hash group → last heartbeat (unix ms)
	handledPrefix = "bcbus:ack:"    // + topic|group|origin: what a group handled of an origin
	handledTTL    = 24 * time.Hour  // records of origins that went quiet expire
)

func groupsKey(topic string) string { return groupsPrefix + topic }
func handledKey(topic, group, origin string) string {
	return handledPrefix + topic + "|" + group + "|" + origin
}

// ErrOutboxFull is returned by Publish when too many messages wait for
// confirmation (Redis unreachable for long, or a consumer group stuck).
var ErrOutboxFull = errors.New("bus: outbox full")

// Redis is the Bus of a cluster: topics are Redis Streams, groups are
// stream consumer groups. Publishers keep what they publish until every
// live group has handled it, so a Redis restart with an empty database loses
// nothing; see docs/cluster.md for the guarantees.
type Redis struct {
	opts     RedisOptions
	rdb      *redis.Client
	log      *slog.Logger
	m        *redisMetrics
	origin   string
	consumer string // prefix of consumer names
	nextCons atomic.Uint64

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	closed chan struct{}
	once   sync.Once
	wg     sync.WaitGroup // writer and confirmer
	subs   sync.WaitGroup // running Subscribe calls

	down    atomic.Bool  // the last command found Redis unreachable
	readyAt atomic.Int64 // unix ns before which consumers do not read (reset grace)

	sessMu sync.Mutex // serialises epoch checks and resets

	outMu    sync.Mutex
	epoch    string // the database's marker this bus last saw
	gen      uint64 // counts resets; a write begun before one is not trusted
	done     bool
	topics   map[string]*outTopic
	outCount int
	wake     chan struct{} // to the writer, capacity 1
	flushed  chan struct{} // closed and replaced after each write attempt

	ledMu   sync.Mutex
	ledgers map[[2]string]*groupLedger
	resets  []chan struct{}
}

// Resetter is implemented by a bus whose shared state can be lost, such as
// a Redis bus whose server restarted with an empty database. Each call to
// Resets returns a new channel that receives a value (coalesced, never
// blocking the bus) after every reset, once the bus has restored what it
// could; it is closed when the bus closes.
type Resetter interface {
	Resets() <-chan struct{}
}

var _ Resetter = (*Redis)(nil)

// NewRedis connects to Redis and returns a bus; it fails when Redis cannot
// be reached now. Later outages are ridden out: see RedisOptions.
func NewRedis(opts RedisOptions) (*Redis, error) {
	if opts.Addr == "" {
		return nil, errors.New("bus: RedisOptions.Addr is required")
	}
	opts.setDefaults()
	m, err := newRedisMetrics(opts.Metrics)
	if err != nil {
		return nil, fmt.Errorf("bus: registering metrics: %w", err)
	}
	if opts.Origin == "" {
		opts.Origin = token(10)
	}
	if strings.ContainsAny(opts.Origin, "|") {
		return nil, errors.New("bus: RedisOptions.Origin must not contain '|'")
	}
	host, _ := os.Hostname()
	b := &Redis{
		opts:     opts,
		log:      opts.Logger.With("component", "bus", "origin", opts.Origin),
		m:        m,
		origin:   opts.Origin,
		consumer: fmt.Sprintf("%s-%d-%s", host, os.Getpid(), opts.Origin),
		closed:   make(chan struct{}),
		topics:   make(map[string]*outTopic),
		wake:     make(chan struct{}, 1),
		flushed:  make(chan struct{}),
		ledgers:  make(map[[2]string]*groupLedger),
	}
	b.rdb = redis.NewClient(&redis.Options{
		Addr:     opts.Addr,
		Password: opts.Password,
		DB:       opts.DB,
		// Every failure must reach the bus, which decides what a retry
		// means (a write may have landed; the database may be new).
		MaxRetries:            -1,
		DialTimeout:           time.Second,
		ReadTimeout:           3 * time.Second,
		WriteTimeout:          3 * time.Second,
		ContextTimeoutEnabled: true,
		PoolSize:              64,
		DisableIdentity:       true,
	})
	b.ctx, b.cancel = context.WithCancel(context.Background())
	ctx, cancel := context.WithTimeout(b.ctx, 3*time.Second)
	defer cancel()
	if err := b.checkEpoch(ctx); err != nil {
		b.cancel()
		_ = b.rdb.Close()
		return nil, fmt.Errorf("bus: connecting to redis at %s: %w", opts.Addr, err)
	}
	b.wg.Add(2)
	go b.writer()
	go b.confirmer()
	return b, nil
}

// Close stops every subscription, tries once more to write what is not
// yet written, and disconnects. Messages not yet confirmed are forgotten.
func (b *Redis) Close() error {
	b.once.Do(func() {
		b.outMu.Lock()
		b.done = true
		b.outMu.Unlock()
		close(b.closed)
		b.cancel()
		b.wg.Wait()
		// Let subscriptions hand back what they hold while the client
		// still works; a handler that ignores its context is not waited
		// for long.
		waited := make(chan struct{})
		go func() { b.subs.Wait(); close(waited) }()
		select {
		case <-waited:
		case <-time.After(b.opts.Block + 3*time.Second):
		}
		b.ledMu.Lock()
		for _, c := range b.resets {
			close(c)
		}
		b.resets = nil
		b.ledMu.Unlock()
		_ = b.rdb.Close()
	})
	return nil
}

func (b *Redis) isClosed() bool {
	select {
	case <-b.closed:
		return true
	default:
		return false
	}
}

// Resets implements Resetter.
func (b *Redis) Resets() <-chan struct{} {
	c := make(chan struct{}, 1)
	b.ledMu.Lock()
	defer b.ledMu.Unlock()
	if b.isClosed() {
		close(c)
		return c
	}
	b.resets = append(b.resets, c)
	return c
}

// Origin returns the id this bus stamps on what it publishes.
func (b *Redis) Origin() string { return b.origin }

// checkEpoch reads the database's marker (creating it in an empty database)
// and runs the reset when it is not the one this bus knew.
func (b *Redis) checkEpoch(ctx context.Context) error {
	b.sessMu.Lock()
	defer b.sessMu.Unlock()
	fresh := token(12)
	prev, err := b.rdb.SetArgs(ctx, epochKey, fresh, redis.SetArgs{Mode: "NX", Get: true}).Result()
	cur := prev
	switch {
	case errors.Is(err, redis.Nil):
		cur = fresh
	case err != nil:
		b.trouble(err)
		return err
	}
	if b.down.Swap(false) {
		b.m.reconnects.Inc()
		b.log.Info("redis reachable again")
	}
	b.outMu.Lock()
	old := b.epoch
	b.outMu.Unlock()
	if cur == old {
		return nil
	}
	for _, s := range allScripts {
		if err := s.Load(ctx, b.rdb).Err(); err != nil {
			b.trouble(err)
			return err
		}
	}
	if old == "" {
		b.outMu.Lock()
		b.epoch = cur
		b.outMu.Unlock()
		return nil
	}
	return b.reset(ctx, cur)
}

// reset restores, in a database that lost everything, what this process
// knows: the records of what its consumer groups handled, the groups its
// unconfirmed messages are for; then lets the writer republish those
// messages and tells the bus's users.
func (b *Redis) reset(ctx context.Context, epoch string) error {
	b.log.Warn("redis lost its data (restarted empty?): restoring groups and republishing the unconfirmed tail")
	// Records first, so that a republished message is recognised as
	// handled by whoever reads it.
	b.ledMu.Lock()
	ledgers := make([]*groupLedger, 0, len(b.ledgers))
	for _, l := range b.ledgers {
		ledgers = append(ledgers, l)
	}
	b.ledMu.Unlock()
	now := time.Now().UnixMilli()
	pipe := b.rdb.Pipeline()
	for _, l := range ledgers {
		keys := []string{l.topic}
		args := []any{l.group, handledTTL.Milliseconds(), 0}
		l.mu.Lock()
		for o, h := range l.origins {
			keys = append(keys, handledKey(l.topic, l.group, o))
			above := h.list()
			args = append(args, h.prefix, len(above))
			for _, s := range above {
				args = append(args, s)
			}
		}
		active := l.active > 0
		l.mu.Unlock()
		if len(keys) > 1 {
			ackScript.EvalSha(ctx, pipe, keys, args...)
		}
		if active {
			pipe.XGroupCreateMkStream(ctx, l.topic, l.group, "0")
			pipe.HSet(ctx, groupsKey(l.topic), l.group, now)
		}
	}
	// Then the groups the unconfirmed messages wait for, so that they are
	// there, reading from the start, before the republish.
	b.outMu.Lock()
	cutoff := time.Now().Add(-b.opts.GroupTimeout).UnixMilli()
	for name, t := range b.topics {
		if len(t.entries) == 0 {
			continue
		}
		for g, seen := range t.groups {
			if seen >= cutoff {
				pipe.XGroupCreateMkStream(ctx, name, g, "0")
			}
		}
	}
	b.outMu.Unlock()
	if pipe.Len() > 0 {
		cmds, _ := pipe.Exec(ctx)
		for _, c := range cmds {
			if e := c.Err(); e != nil && !isBusyGroup(e) {
				b.trouble(e)
				return fmt.Errorf("bus: restoring after a reset: %w", e)
			}
		}
	}
	b.outMu.Lock()
	b.gen++
	b.epoch = epoch
	for _, t := range b.topics {
		t.sent = t.confirmed
	}
	b.outMu.Unlock()
	b.readyAt.Store(time.Now().Add(b.opts.ResetGrace).UnixNano())
	b.m.resets.Inc()
	select {
	case b.wake <- struct{}{}:
	default:
	}
	b.ledMu.Lock()
	for _, c := range b.resets {
		select {
		case c <- struct{}{}:
		default:
		}
	}
	b.ledMu.Unlock()
	return nil
}

// trouble notes a failure to reach Redis; server error replies are not
// trouble of that kind.
func (b *Redis) trouble(err error) {
	if !connectionError(err) {
		return
	}
	if !b.down.Swap(true) {
		b.log.Warn("redis unreachable; buffering and retrying", "err", err)
	}
	b.outMu.Lock()
	b.notifyFlushedLocked()
	b.outMu.Unlock()
}

func connectionError(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var re redis.Error
	if errors.As(err, &re) {
		// Replies from a live server, except those of one that is still
		// loading or shutting down.
		msg := re.Error()
		return strings.HasPrefix(msg, "LOADING") || strings.HasPrefix(msg, "MASTERDOWN")
	}
	return true
}

func isBusyGroup(err error) bool { return err != nil && strings.HasPrefix(err.Error(), "BUSYGROUP") }
func isNoGroup(err error) bool   { return err != nil && strings.HasPrefix(err.Error(), "NOGROUP") }
func isNoScript(err error) bool  { return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") }
func isEpoch(err error) bool     { return err != nil && strings.Contains(err.Error(), "BCEPOCH") }

func token(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))
}

// backoff doubles from 20 ms to 1 s.
type backoff struct{ d time.Duration }

func (bo *backoff) next() time.Duration {
	if bo.d == 0 {
		bo.d = 20 * time.Millisecond
	} else {
		bo.d = min(2*bo.d, time.Second)
	}
	return bo.d
}

func (bo *backoff) reset() { bo.d = 0 }

// sleep waits d or until ctx ends, reporting whether it slept the whole d.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

type redisMetrics struct {
	published, delivered, redelivered, duplicates prometheus.Counter
	reconnects, resets, outboxDropped             prometheus.Counter
	outbox                                        prometheus.Gauge
}

func newRedisMetrics(reg prometheus.Registerer) (*redisMetrics, error) {
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "backchannel", Subsystem: "bus_redis", Name: name, Help: help})
	}
	m := &redisMetrics{
		published:     c("published_total", "Messages written to Redis streams, republished ones included."),
		delivered:     c("delivered_total", "Messages handed to handlers and acknowledged."),
		redelivered:   c("redelivered_total", "Messages handed to a handler again: refused batches and entries claimed from another consumer."),
		duplicates:    c("duplicates_dropped_total", "Entries dropped because their group had already handled them (republished or retried writes)."),
		reconnects:    c("reconnects_total", "Times Redis became reachable again after being unreachable."),
		resets:        c("resets_total", "Times Redis was found to have lost its data, and the bus restored it."),
		outboxDropped: c("outbox_dropped_total", "Unconfirmed messages forgotten because no live group was waiting for them."),
		outbox: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "backchannel", Subsystem: "bus_redis", Name: "outbox_messages",
			Help: "Messages kept for republishing until every live group has handled them."}),
	}
	for _, col := range []prometheus.Collector{m.published, m.delivered, m.redelivered, m.duplicates, m.reconnects, m.resets, m.outboxDropped, m.outbox} {
		if err := reg.Register(col); err != nil {
			return nil, err
		}
	}
	return m, nil
}
