package connection

import (
	"sync"
	"time"
)

// wheel is a hashed timing wheel: the one goroutine that enforces every
// link's deadlines (hello timeout, keepalive ping, pong timeout). A link is
// in at most one slot at a time; when its slot comes round, link.check runs
// and schedules the link's next deadline. Nothing per link ticks, so an idle
// link costs one slice entry here.
type wheel struct {
	tick  int64 // ns per slot
	mu    sync.Mutex
	slots [][]*link
	cur   int64 // absolute number of the next slot to fire
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once
}

func newWheel(tick, span time.Duration) *wheel {
	n := int(span/tick) + 2
	w := &wheel{
		tick:  int64(tick),
		slots: make([][]*link, n),
		cur:   time.Now().UnixNano()/int64(tick) + 1,
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	return w
}

// schedule has l checked at (or just after) at, unix ns, unless it is
// already due no later than that.
func (w *wheel) schedule(l *link, at int64) {
	t := at/w.tick + 1 // the slot that fires once at has passed
	w.mu.Lock()
	defer w.mu.Unlock()
	if t < w.cur {
		t = w.cur
	}
	if last := w.cur + int64(len(w.slots)) - 1; t > last {
		t = last // checked early, then rescheduled
	}
	if l.wheelAt != 0 && l.wheelAt <= t {
		return
	}
	l.wheelAt = t
	i := t % int64(len(w.slots))
	w.slots[i] = append(w.slots[i], l)
}

func (w *wheel) run() {
	defer close(w.done)
	ticker := time.NewTicker(time.Duration(w.tick))
	defer ticker.Stop()
	var due []*link
	for {
		select {
		case <-w.stop:
			return
		case now := <-ticker.C:
			ns := now.UnixNano()
			upTo := ns / w.tick
			for {
				w.mu.Lock()
				if w.cur > upTo {
					w.mu.Unlock()
					break
				}
				t := w.cur
				i := t % int64(len(w.slots))
				slot := w.slots[i]
				w.slots[i] = nil
				w.cur++
				due = due[:0]
				for _, l := range slot {
					if l.wheelAt == t {
						l.wheelAt = 0
						due = append(due, l)
					}
				}
				w.mu.Unlock()
				for _, l := range due {
					l.check(ns)
				}
				clear(due)
			}
		}
	}
}

func (w *wheel) close() {
	w.once.Do(func() { close(w.stop) })
}
