package connection

import (
	"context"
	"sync"
)

// latestFanout writes latest-state group messages (live poll results) to
// their members from a goroutine of its own, one at a time.
//
// Why: results to a stream's whole audience are one write per link, about
// 100 ms of CPU for 15,000 links, twice a second. Written on the downward
// handler with a goroutine per core, they held every core for that long
// and the vote path (reading the links, counting) waited behind them; the
// acks queued on the same handler waited too. On its own goroutine such a
// send takes one core at most and the handler goes on.
//
// Order is kept: a message that is not latest-state waits until the
// queue is empty, so a poll's final results never pass its live ones. A
// queued message whose successor (same key) arrives is replaced by it: a
// latest-state message carries the whole state, and the history already
// holds the successor.
type latestFanout struct {
	mu      sync.Mutex
	queue   []latestSend
	running bool          // a worker serves the queue
	idle    chan struct{} // closed while nothing is queued or being written
	wake    chan struct{}
}

type latestSend struct {
	group, key string
	frame      []byte
}

// maxLatestQueue bounds the queue: beyond it (many groups with results at
// once) the handler writes the message itself, which slows what comes next
// on the bus rather than letting memory grow.
const maxLatestQueue = 256

func newLatestFanout() *latestFanout {
	idle := make(chan struct{})
	close(idle)
	return &latestFanout{idle: idle, wake: make(chan struct{}, 1)}
}

// push queues ls for the worker; false when there is none or the queue is
// full, and the caller must write it itself (after waitIdle).
func (f *latestFanout) push(ls latestSend) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.running {
		return false
	}
	for i := range f.queue {
		if f.queue[i].key == ls.key {
			f.queue[i] = ls
			return true
		}
	}
	if len(f.queue) >= maxLatestQueue {
		return false
	}
	f.queue = append(f.queue, ls)
	select {
	case <-f.idle:
		f.idle = make(chan struct{})
	default:
	}
	select {
	case f.wake <- struct{}{}:
	default:
	}
	return true
}

// waitIdle returns once everything queued before it has been written, or
// when ctx ends.
func (f *latestFanout) waitIdle(ctx context.Context) {
	f.mu.Lock()
	idle := f.idle
	f.mu.Unlock()
	select {
	case <-idle:
	case <-ctx.Done():
	}
}

// run writes queued messages with deliver until ctx ends; what is still
// queued then is dropped (the server is stopping).
func (f *latestFanout) run(ctx context.Context, deliver func(latestSend)) {
	f.mu.Lock()
	f.running = true
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.running = false
		clear(f.queue)
		f.queue = f.queue[:0]
		f.markIdleLocked()
		f.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.wake:
		}
		for ls, ok := f.next(); ok; ls, ok = f.next() {
			deliver(ls)
			if ctx.Err() != nil {
				return
			}
		}
	}
}

// next takes the first queued send; with none, the fan-out is idle.
func (f *latestFanout) next() (latestSend, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.queue) == 0 {
		f.markIdleLocked()
		return latestSend{}, false
	}
	ls := f.queue[0]
	f.queue[0] = latestSend{}
	f.queue = f.queue[1:]
	return ls, true
}

// markIdleLocked releases waitIdle's callers; callers hold f.mu.
func (f *latestFanout) markIdleLocked() {
	select {
	case <-f.idle:
	default:
		close(f.idle)
	}
}
