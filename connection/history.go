package connection

import (
	"encoding/json"
	"sync"
	"time"

	"github.com/backchannel/backchannel/internal/control"
)

// groupHead is what the connection server reads from a group message's
// bytes, once per message (not per link): the envelope the application
// encoded (t, g, off, ep) and, for latest-state types, what makes two
// messages the same piece of state.
type groupHead struct {
	T    string `json:"t"`
	G    string `json:"g"`
	Off  uint64 `json:"off"`
	Ep   string `json:"ep"`
	Poll string `json:"poll"`
}

// latestKey returns a non-empty key for latest-state messages: a newer one
// with the same key supersedes an older one, in a link's send queue and in
// the group's history.
func (h groupHead) latestKey() string {
	if h.T == control.TypeResults {
		return h.G + "\x00" + h.T + "\x00" + h.Poll
	}
	return ""
}

// history keeps each group's recent messages so that a client that
// reconnects can be sent what it missed (resume). Per group it holds at
// most size messages no older than ttl; a latest-state message replaces the
// older ones with the same key (their successor carries the state, so
// dropping them leaves no gap).
type history struct {
	size int
	ttl  time.Duration
	mu   sync.Mutex
	g    map[string]*groupLog
}

type groupLog struct {
	ep      string
	base    uint64 // every message after base, up to last, is held or superseded
	last    uint64 // offset of the newest message seen
	lastAt  int64
	entries []histEntry // ascending off
}

type histEntry struct {
	off   uint64
	at    int64 // unix ns
	key   string
	frame []byte
}

func newHistory(size int, ttl time.Duration) *history {
	return &history{size: size, ttl: ttl, g: make(map[string]*groupLog)}
}

// add records a group message; messages without an offset are not kept.
func (h *history) add(group string, head groupHead, key string, frame []byte, now int64) {
	if h.size <= 0 || head.Off == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	log := h.g[group]
	if log == nil || log.ep != head.Ep {
		// A new epoch restarts the offsets: nothing older can be replayed.
		log = &groupLog{ep: head.Ep, base: head.Off - 1, last: head.Off - 1}
		h.g[group] = log
	}
	if head.Off <= log.last {
		return // a duplicate (bus redelivery) or out of order
	}
	if head.Off != log.last+1 {
		// Messages this server never received (it had no links then):
		// nothing before this one can be replayed from here.
		clear(log.entries)
		log.entries = log.entries[:0]
		log.base = head.Off - 1
	}
	if key != "" {
		kept := log.entries[:0]
		for _, e := range log.entries {
			if e.key != key {
				kept = append(kept, e)
			}
		}
		clear(log.entries[len(kept):])
		log.entries = kept
	}
	log.entries = append(log.entries, histEntry{off: head.Off, at: now, key: key, frame: frame})
	log.last, log.lastAt = head.Off, now
	h.trim(log, now)
}

// trim drops entries past the size or age limit; what they held can no
// longer be replayed, so base moves past them.
func (h *history) trim(log *groupLog, now int64) {
	cut := 0
	for cut < len(log.entries) && (len(log.entries)-cut > h.size || now-log.entries[cut].at > int64(h.ttl)) {
		cut++
	}
	if cut > 0 {
		log.base = max(log.base, log.entries[cut-1].off)
		clear(log.entries[:cut])
		log.entries = append(log.entries[:0], log.entries[cut:]...)
	}
}

// since returns the frames of group after offset off in epoch ep, in
// order, and whether that is everything the client missed.
func (h *history) since(group, ep string, off uint64, now int64) ([][]byte, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	log := h.g[group]
	if log == nil {
		return nil, false // no record: the client may have missed anything
	}
	h.trim(log, now)
	if log.ep != ep || off < log.base || off > log.last {
		return nil, false
	}
	var out [][]byte
	for _, e := range log.entries {
		if e.off > off {
			out = append(out, e.frame)
		}
	}
	return out, true
}

// sweep forgets groups that have been silent for longer than ttl.
func (h *history) sweep(now int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, log := range h.g {
		if now-log.lastAt > int64(h.ttl) {
			delete(h.g, id)
		}
	}
}

func parseGroupHead(payload []byte) groupHead {
	var h groupHead
	_ = json.Unmarshal(payload, &h)
	return h
}
