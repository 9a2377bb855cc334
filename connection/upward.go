package connection

import (
	"context"
	"sync"
	"time"

	"github.com/backchannel/backchannel/groups"
	"github.com/backchannel/backchannel/internal/bus"
)

// upward batches mirror messages for the application tier. A flush is
// scheduled when the first message of a batch arrives, so an idle server has
// no timer and no goroutine, and no message waits longer than FlushDelay
// (plus bus time) unless the bus fails.
type upward struct {
	s       *Server
	flushMu sync.Mutex // one flush at a time keeps the order
	mu      sync.Mutex
	pending [][]byte
	timer   *time.Timer
	stopped bool
}

// Batches larger than this are flushed at once; pending messages beyond
// maxPending (the bus is failing) drop the oldest.
const (
	maxUpBatch = 512
	maxPending = 100_000
)

func newUpward(s *Server) *upward { return &upward{s: s} }

func (u *upward) add(m groups.Mirror) {
	b := m.Encode()
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.stopped {
		return
	}
	u.pending = append(u.pending, b)
	if over := len(u.pending) - maxPending; over > 0 {
		u.pending = u.pending[over:]
		u.s.metrics.busErrors.Add(float64(over))
	}
	switch {
	case len(u.pending) >= maxUpBatch:
		if u.timer != nil {
			u.timer.Stop()
		}
		u.timer = time.AfterFunc(0, u.flush)
	case u.timer == nil:
		u.timer = time.AfterFunc(u.s.cfg.FlushDelay, u.flush)
	}
}

func (u *upward) flush() {
	u.flushMu.Lock()
	defer u.flushMu.Unlock()
	u.mu.Lock()
	batch := u.pending
	u.pending = nil
	u.timer = nil
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
			if u.timer == nil {
				u.timer = time.AfterFunc(250*time.Millisecond, u.flush)
			}
		}
		u.mu.Unlock()
	}
}

// stop flushes what is pending, once, and prevents further flushes.
func (u *upward) stop(ctx context.Context) {
	u.mu.Lock()
	if u.timer != nil {
		u.timer.Stop()
		u.timer = nil
	}
	u.mu.Unlock()
	u.flush()
	u.mu.Lock()
	u.stopped = true
	if u.timer != nil {
		u.timer.Stop()
		u.timer = nil
	}
	u.pending = nil
	u.mu.Unlock()
}
