package bus

import "sync"

// handledLimit bounds the out-of-order handled numbers kept per origin; past
// it the oldest hole is given up (its message was trimmed, never to come).
const handledLimit = 4096

// handled is what a group has handled of one origin: every sequence number
// up to prefix, and the numbers in above.
type handled struct {
	prefix uint64
	above  map[uint64]struct{}
}

func (h *handled) has(seq uint64) bool {
	if seq <= h.prefix {
		return true
	}
	_, ok := h.above[seq]
	return ok
}

func (h *handled) add(seq uint64) {
	if seq <= h.prefix {
		return
	}
	if seq == h.prefix+1 {
		h.prefix = seq
	} else {
		if h.above == nil {
			h.above = make(map[uint64]struct{})
		}
		h.above[seq] = struct{}{}
	}
	h.settle()
}

// raise records that everything up to p is handled.
func (h *handled) raise(p uint64) {
	if p <= h.prefix {
		return
	}
	h.prefix = p
	h.settle()
}

func (h *handled) settle() {
	if len(h.above) > handledLimit {
		low := ^uint64(0)
		for s := range h.above {
			low = min(low, s)
		}
		h.prefix = max(h.prefix, low-1)
	}
	for len(h.above) > 0 {
		if _, ok := h.above[h.prefix+1]; !ok {
			break
		}
		delete(h.above, h.prefix+1)
		h.prefix++
	}
	for s := range h.above {
		if s <= h.prefix {
			delete(h.above, s)
		}
	}
}

// sortedAbove lists the out-of-order numbers, for uploading after a reset.
func (h *handled) list() []uint64 {
	out := make([]uint64, 0, len(h.above))
	for s := range h.above {
		out = append(out, s)
	}
	return out
}

// groupLedger is this process's memory of what one consumer group handled,
// per origin, shared by the group's consumers in this process. It is the
// copy that survives Redis losing its database.
type groupLedger struct {
	topic, group string
	mu           sync.Mutex
	origins      map[string]*handled
	active       int // running Subscribe calls
}

func (g *groupLedger) origin(o string) *handled {
	h := g.origins[o]
	if h == nil {
		h = &handled{}
		g.origins[o] = h
	}
	return h
}
