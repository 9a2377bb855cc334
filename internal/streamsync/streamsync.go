// Package streamsync tells the application tier which streams are on air
// across a cluster. Ingest nodes announce each on-air/off-air change of their
// registry and, periodically, the whole set they hold; the application side
// merges the announcements of every ingest node into one view and reports
// transitions only: a stream is live while at least one node has it, so a
// publisher taking over on another node is not an off-air flap, and a node
// that stops announcing (killed, partitioned) has its streams expire.
package streamsync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/backchannel/backchannel/internal/bus"
	"github.com/backchannel/backchannel/internal/media"
)

// Topic carries announcements. Every application server reads all of it,
// each as a consumer group of its own.
const Topic = "bc:streams"

// DefaultInterval is how often an ingest node repeats its whole set.
const DefaultInterval = 2 * time.Second

// announcement is one message on Topic.
type announcement struct {
	Node    string             `json:"node"`
	Event   *event             `json:"event,omitempty"`   // one change
	Streams []media.StreamInfo `json:"streams,omitempty"` // the whole set, with Snapshot
	// Snapshot marks a whole-set announcement, which may be empty.
	Snapshot bool  `json:"snapshot,omitempty"`
	TTLms    int64 `json:"ttl_ms"` // forget the node's streams after this long without news
	At       int64 `json:"at"`     // unix ms when sent
}

type event struct {
	Stream string           `json:"stream"`
	Live   bool             `json:"live"`
	Info   media.StreamInfo `json:"info"`
}

// Announce publishes reg's changes and, every interval, its whole set, until
// ctx ends. Announcements that cannot be published are retried by the next
// snapshot, so a bus outage delays news but does not lose it.
func Announce(ctx context.Context, b bus.Bus, node string, reg *media.Registry, interval time.Duration, log *slog.Logger) error {
	if interval <= 0 {
		interval = DefaultInterval
	}
	ttl := (3 * interval).Milliseconds()
	changes := make(chan media.Event, 64)
	cancel := reg.Subscribe(func(ev media.Event) {
		select {
		case changes <- ev:
		default: // the next snapshot carries it
		}
	})
	defer cancel()
	publish := func(a announcement) {
		a.Node, a.TTLms, a.At = node, ttl, time.Now().UnixMilli()
		data, err := json.Marshal(a)
		if err != nil {
			log.Error("encoding a stream announcement", "err", err)
			return
		}
		if err := b.Publish(ctx, Topic, data); err != nil && ctx.Err() == nil {
			log.Warn("announcing streams failed; the next snapshot retries", "err", err)
		}
	}
	snapshot := func() { publish(announcement{Snapshot: true, Streams: reg.List()}) }
	snapshot()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev := <-changes:
			publish(announcement{Event: &event{Stream: ev.Stream, Live: ev.Live, Info: ev.Info}})
		case <-tick.C:
			snapshot()
		}
	}
}

// View merges the announcements of every ingest node. Its methods are safe
// for concurrent use.
type View struct {
	order   sync.Mutex                             // held from a change to its notifications, so they keep order
	mu      sync.Mutex                             // guards the maps
	streams map[string]map[string]media.StreamInfo // stream → node → info
	nodes   map[string]time.Time                   // node → when its news expires
	notify  func(media.Event)
	now     func() time.Time
}

// NewView returns an empty view that calls notify for every transition:
// Live when the first node has a stream, not Live when the last one lets it
// go. notify is called without the view's lock held, in order.
func NewView(notify func(media.Event)) *View {
	return &View{
		streams: make(map[string]map[string]media.StreamInfo),
		nodes:   make(map[string]time.Time),
		notify:  notify,
		now:     time.Now,
	}
}

// Local feeds a registry's events straight into the view, the embedded
// deployment's path: the same transition rules without a bus.
func (v *View) Local(node string) func(media.Event) {
	return func(ev media.Event) {
		v.apply(announcement{Node: node, Event: &event{Stream: ev.Stream, Live: ev.Live, Info: ev.Info}})
	}
}

// Follow consumes Topic as consumer group group (the application server's
// own id) and applies every announcement until ctx ends, expiring silent
// nodes.
func (v *View) Follow(ctx context.Context, b bus.Bus, group string, log *slog.Logger) error {
	errc := make(chan error, 1)
	go func() {
		errc <- b.Subscribe(ctx, Topic, group, func(_ context.Context, batch []bus.Message) error {
			for _, m := range batch {
				var a announcement
				if err := json.Unmarshal(m.Data, &a); err != nil || a.Node == "" {
					// A bad message is dropped, not retried: retrying cannot fix it.
					log.Warn("dropping a malformed stream announcement", "id", m.ID, "err", err)
					continue
				}
				v.apply(a)
			}
			return nil
		})
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case err := <-errc:
			if errors.Is(err, context.Canceled) || ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("streamsync: %w", err)
		case <-tick.C:
			v.Expire()
		}
	}
}

// Expire forgets the streams of nodes whose news has run out.
func (v *View) Expire() {
	v.order.Lock()
	defer v.order.Unlock()
	now := v.now()
	var events []media.Event
	v.mu.Lock()
	for node, until := range v.nodes {
		if now.After(until) {
			delete(v.nodes, node)
			events = append(events, v.replaceLocked(node, nil)...)
		}
	}
	v.mu.Unlock()
	v.emit(events)
}

// Live returns the info of every live stream, one entry per stream (the
// most recently started publication when several nodes have it).
func (v *View) Live() []media.StreamInfo {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make([]media.StreamInfo, 0, len(v.streams))
	for _, byNode := range v.streams {
		out = append(out, newest(byNode))
	}
	return out
}

// Info returns the stream's most recent description: the newest
// publication's, as refreshed by its node's latest announcement.
func (v *View) Info(stream string) (media.StreamInfo, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	byNode, ok := v.streams[stream]
	if !ok {
		return media.StreamInfo{}, false
	}
	return newest(byNode), true
}

// Where returns the nodes that have the stream live.
func (v *View) Where(stream string) []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []string
	for node := range v.streams[stream] {
		out = append(out, node)
	}
	return out
}

func (v *View) apply(a announcement) {
	v.order.Lock()
	defer v.order.Unlock()
	var events []media.Event
	v.mu.Lock()
	if a.TTLms > 0 {
		v.nodes[a.Node] = v.now().Add(time.Duration(a.TTLms) * time.Millisecond)
	}
	switch {
	case a.Snapshot:
		set := make(map[string]media.StreamInfo, len(a.Streams))
		for _, info := range a.Streams {
			set[info.Name] = info
		}
		events = v.replaceLocked(a.Node, set)
	case a.Event != nil && a.Event.Live:
		events = v.setLocked(a.Node, a.Event.Info)
	case a.Event != nil:
		events = v.dropLocked(a.Node, a.Event.Stream)
	}
	v.mu.Unlock()
	v.emit(events)
}

func (v *View) setLocked(node string, info media.StreamInfo) []media.Event {
	byNode := v.streams[info.Name]
	if byNode == nil {
		byNode = make(map[string]media.StreamInfo)
		v.streams[info.Name] = byNode
	}
	first := len(byNode) == 0
	byNode[node] = info
	if !first {
		return nil // a refresh, or the stream also live elsewhere: no transition
	}
	return []media.Event{{Stream: info.Name, Live: true, Info: info}}
}

func (v *View) dropLocked(node, stream string) []media.Event {
	byNode, ok := v.streams[stream]
	if !ok {
		return nil
	}
	info, had := byNode[node]
	if !had {
		return nil
	}
	delete(byNode, node)
	if len(byNode) > 0 {
		return nil
	}
	delete(v.streams, stream)
	return []media.Event{{Stream: stream, Live: false, Info: info}}
}

// replaceLocked makes node's streams exactly set.
func (v *View) replaceLocked(node string, set map[string]media.StreamInfo) []media.Event {
	var events []media.Event
	for name, byNode := range v.streams {
		if _, ok := byNode[node]; ok {
			if _, keep := set[name]; !keep {
				events = append(events, v.dropLocked(node, name)...)
			}
		}
	}
	for _, info := range set {
		events = append(events, v.setLocked(node, info)...)
	}
	return events
}

func (v *View) emit(events []media.Event) {
	for _, ev := range events {
		v.notify(ev)
	}
}

func newest(byNode map[string]media.StreamInfo) media.StreamInfo {
	var best media.StreamInfo
	for _, info := range byNode {
		if best.Name == "" || info.StartedAt.After(best.StartedAt) {
			best = info
		}
	}
	return best
}
