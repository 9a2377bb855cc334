// Package cluster owns node membership in a multi-process deployment: every
// node gossips (hashicorp/memberlist) its roles, URLs, region, location and
// load, keeps a live view of the others, and can pick the least-loaded
// connection server for a new control link (GET /connect).
package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
)

// Role is a part a node plays; a node may play several.
type Role string

// The roles of the backchannel binary.
const (
	RoleConnection  Role = "connection"
	RoleApplication Role = "application"
	RoleEdge        Role = "edge"
	RoleIngest      Role = "ingest"
)

// Load is what a node reports about how busy it is.
type Load struct {
	Links     int     `json:"l,omitempty"`   // open control links (connection role)
	Capacity  int     `json:"cap,omitempty"` // links it accepts; 0: DefaultCapacity
	Viewers   int     `json:"v,omitempty"`   // media viewers (edge role)
	ViewerCap int     `json:"vc,omitempty"`  // WHEP viewers it accepts (edge role); 0: no cap
	Egress    int     `json:"eg,omitempty"`  // media egress to viewers, kbit/s (edge role)
	CPU       float64 `json:"cpu,omitempty"` // busy fraction of its CPUs, 0..1
}

// DefaultCapacity is the link capacity assumed for a connection server that
// does not announce one.
const DefaultCapacity = 100_000

// Meta is what a node announces. It travels in memberlist's node metadata,
// which holds at most 512 bytes: keep URLs short.
type Meta struct {
	ID     string  `json:"id"`
	Roles  []Role  `json:"r"`
	URL    string  `json:"u,omitempty"`  // public base URL, e.g. https://c1.example.com
	WS     string  `json:"ws,omitempty"` // control-link WebSocket URL (connection role)
	Region string  `json:"rg,omitempty"`
	Lat    float64 `json:"lat,omitempty"`
	Lon    float64 `json:"lon,omitempty"`
	Load   Load    `json:"ld"`
}

// MaxMeta is memberlist's limit on node metadata.
const MaxMeta = memberlist.MetaMaxSize

// Has reports whether the node plays role r.
func (m Meta) Has(r Role) bool { return slices.Contains(m.Roles, r) }

func (m Meta) encode() ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxMeta {
		return nil, fmt.Errorf("cluster: node metadata is %d bytes, memberlist carries at most %d: shorten the URLs", len(b), MaxMeta)
	}
	return b, nil
}

func decodeMeta(b []byte) (Meta, error) {
	var m Meta
	if err := json.Unmarshal(b, &m); err != nil {
		return Meta{}, err
	}
	if m.ID == "" {
		return Meta{}, errors.New("metadata without id")
	}
	return m, nil
}

// Member is one live node as seen from here.
type Member struct {
	Meta
	Gossip string // memberlist address, host:port
}

// Config configures a node. Zero tuning fields take the defaults in their
// comments.
type Config struct {
	Meta      Meta     // ID required; Load is the initial load
	BindAddr  string   // gossip address (0.0.0.0)
	BindPort  int      // gossip port, TCP and UDP (7946; 0: a free one, see Node.Addr)
	Advertise string   // host:port others reach this node at (the bound one)
	Seeds     []string // gossip addresses of nodes to join; none: start a cluster

	// LoadFunc, when set, is asked every UpdateInterval for the current
	// load, which is announced when it changed.
	LoadFunc       func() Load
	UpdateInterval time.Duration // 1 s

	// Failure detection. LAN defaults; tests use shorter ones.
	ProbeInterval  time.Duration // 1 s
	ProbeTimeout   time.Duration // 500 ms
	GossipInterval time.Duration // 200 ms
	SuspicionMult  int           // 4

	Logger  *slog.Logger
	Metrics prometheus.Registerer // nil: a private registry
}

// Node is this process's membership in the cluster.
type Node struct {
	cfg  Config
	log  *slog.Logger
	ml   *memberlist.Memberlist
	stop chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex
	meta    Meta
	encoded []byte
	members map[string]*Member // by memberlist name (= ID)
	// assigned counts links sent to a node by this node's picker since
	// that node last announced its load, so that picks between two
	// announcements spread instead of all going to the same node.
	assigned map[string]int
	changed  chan struct{} // closed and replaced on every membership event
	closed   bool

	metrics *metrics
}

type metrics struct {
	members *prometheus.GaugeVec
	picks   *prometheus.CounterVec
}

// Join starts gossiping and joins the seeds (when any is given; failing to
// reach every seed is an error).
func Join(cfg Config) (*Node, error) {
	if cfg.Meta.ID == "" || strings.ContainsAny(cfg.Meta.ID, " \t\n") {
		return nil, errors.New("cluster: Config.Meta.ID must be a non-empty word")
	}
	if len(cfg.Meta.Roles) == 0 {
		return nil, errors.New("cluster: Config.Meta.Roles is empty")
	}
	if cfg.Meta.Has(RoleConnection) && cfg.Meta.WS == "" {
		return nil, errors.New("cluster: a connection node needs Config.Meta.WS")
	}
	if cfg.BindAddr == "" {
		cfg.BindAddr = "0.0.0.0"
	}
	if cfg.UpdateInterval <= 0 {
		cfg.UpdateInterval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = prometheus.NewRegistry()
	}
	enc, err := cfg.Meta.encode()
	if err != nil {
		return nil, err
	}
	n := &Node{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "cluster", "node", cfg.Meta.ID),
		stop:     make(chan struct{}),
		meta:     cfg.Meta,
		encoded:  enc,
		members:  make(map[string]*Member),
		assigned: make(map[string]int),
		changed:  make(chan struct{}),
		metrics: &metrics{
			members: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "backchannel", Subsystem: "cluster", Name: "members",
				Help: "Live nodes per role, this one included."}, []string{"role"}),
			picks: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "backchannel", Subsystem: "cluster", Name: "connect_picks_total",
				Help: "Connection servers handed out by /connect, per chosen server; server=\"\" when none was alive."}, []string{"server"}),
		},
	}
	for _, c := range []prometheus.Collector{n.metrics.members, n.metrics.picks} {
		if err := cfg.Metrics.Register(c); err != nil {
			return nil, fmt.Errorf("cluster: registering metrics: %w", err)
		}
	}

	for _, seed := range cfg.Seeds {
		if _, _, err := net.SplitHostPort(seed); err != nil {
			return nil, fmt.Errorf("cluster: seed %q is not host:port: %w", seed, err)
		}
	}
	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.Meta.ID
	mc.BindAddr = cfg.BindAddr
	mc.BindPort = cfg.BindPort
	mc.AdvertisePort = cfg.BindPort
	if cfg.BindPort == 0 && cfg.Advertise == "" {
		// memberlist picks a free port for TCP, binds UDP to the same
		// number, and retries when that one is taken.
		mc.AdvertisePort = 0
	}
	if cfg.Advertise != "" {
		host, port, err := net.SplitHostPort(cfg.Advertise)
		if err != nil {
			return nil, fmt.Errorf("cluster: Config.Advertise: %w", err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("cluster: Config.Advertise port: %w", err)
		}
		mc.AdvertiseAddr, mc.AdvertisePort = host, p
	} else if ip := net.ParseIP(cfg.BindAddr); ip != nil && !ip.IsUnspecified() {
		mc.AdvertiseAddr = cfg.BindAddr
	}
	setDur(&mc.ProbeInterval, cfg.ProbeInterval)
	setDur(&mc.ProbeTimeout, cfg.ProbeTimeout)
	setDur(&mc.GossipInterval, cfg.GossipInterval)
	if cfg.ProbeTimeout == 0 {
		mc.ProbeTimeout = 500 * time.Millisecond
	}
	if cfg.GossipInterval == 0 {
		mc.GossipInterval = 200 * time.Millisecond
	}
	mc.SuspicionMult = 4
	if cfg.SuspicionMult > 0 {
		mc.SuspicionMult = cfg.SuspicionMult
	}
	if cfg.ProbeInterval > 0 && cfg.ProbeInterval < time.Second {
		// Short probes belong to tests and small clusters: reconcile
		// full state and give up on dead nodes quickly too.
		mc.PushPullInterval = 10 * cfg.ProbeInterval
		mc.GossipToTheDeadTime = 10 * cfg.ProbeInterval
		mc.TCPTimeout = 5 * cfg.ProbeInterval
	}
	mc.Delegate = (*delegate)(n)
	mc.Events = (*events)(n)
	mc.Logger = log.New(&slogWriter{log: n.log}, "", 0)
	mc.LogOutput = nil

	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("cluster: starting memberlist: %w", err)
	}
	n.ml = ml
	if len(cfg.Seeds) > 0 {
		// Nodes start in any order and seeds restart: a seed that is not
		// up yet is retried in the background instead of failing start-up,
		// and a node left alone (its peers gone, a partition) joins again.
		if _, err := ml.Join(cfg.Seeds); err != nil {
			n.log.Warn("cluster seeds not reachable yet; retrying", "seeds", cfg.Seeds, "err", err)
		}
		n.wg.Add(1)
		go n.rejoin()
	}
	if cfg.LoadFunc != nil {
		n.wg.Add(1)
		go n.pollLoad()
	}
	return n, nil
}

func setDur(dst *time.Duration, v time.Duration) {
	if v > 0 {
		*dst = v
	}
}

// Addr returns the gossip address others can join: host:port.
func (n *Node) Addr() string {
	ln := n.ml.LocalNode()
	return net.JoinHostPort(ln.Addr.String(), strconv.Itoa(int(ln.Port)))
}

// ID returns this node's id.
func (n *Node) ID() string { return n.cfg.Meta.ID }

// Leave tells the others this node is going (they stop offering it at
// once), waits up to timeout for that to spread, and stops gossiping.
func (n *Node) Leave(timeout time.Duration) error {
	err := n.ml.Leave(timeout)
	return errors.Join(err, n.Close())
}

// Close stops gossiping without a word, as a crash would: the others find
// the node dead by probing it.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	close(n.stop)
	n.mu.Unlock()
	n.wg.Wait()
	return n.ml.Shutdown()
}

// SetLoad announces a new load at once.
func (n *Node) SetLoad(l Load) error {
	n.mu.Lock()
	if n.meta.Load == l {
		n.mu.Unlock()
		return nil
	}
	m := n.meta
	m.Load = l
	enc, err := m.encode()
	if err != nil {
		n.mu.Unlock()
		return err
	}
	n.meta, n.encoded = m, enc
	n.mu.Unlock()
	// UpdateNode asks the delegate for the new metadata and gossips it;
	// it waits for nothing when the timeout is 0.
	return n.ml.UpdateNode(0)
}

func (n *Node) pollLoad() {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.UpdateInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if err := n.SetLoad(n.cfg.LoadFunc()); err != nil {
				n.log.Warn("announcing load failed", "err", err)
			}
		case <-n.stop:
			return
		}
	}
}

// Members returns the live nodes playing role (every live node when role
// is ""), this one included, ordered by id. Nodes suspected of being dead
// are left out.
func (n *Node) Members(role Role) []Member {
	alive := map[string]bool{}
	for _, m := range n.ml.Members() {
		if m.State == memberlist.StateAlive {
			alive[m.Name] = true
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []Member
	for name, m := range n.members {
		if alive[name] && (role == "" || m.Has(role)) {
			out = append(out, *m)
		}
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Changed returns a channel closed at the next membership or metadata
// change, for callers that wait for one.
func (n *Node) Changed() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.changed
}

func (n *Node) noteChangeLocked() {
	close(n.changed)
	n.changed = make(chan struct{})
	counts := map[Role]int{RoleConnection: 0, RoleApplication: 0, RoleEdge: 0, RoleIngest: 0}
	for _, m := range n.members {
		for _, r := range m.Roles {
			counts[r]++
		}
	}
	for r, c := range counts {
		n.metrics.members.WithLabelValues(string(r)).Set(float64(c))
	}
}

// PickConnection returns the live connection server with the most spare
// capacity: lowest links (plus those this node sent it since its last
// announcement) relative to capacity, lower CPU on a tie. Servers at
// capacity are not offered. ok is false when none is left.
func (n *Node) PickConnection() (Member, bool) {
	cands := n.Members(RoleConnection)
	n.mu.Lock()
	defer n.mu.Unlock()
	best, bestScore := -1, 0.0
	for i, m := range cands {
		if m.WS == "" {
			continue
		}
		capacity := m.Load.Capacity
		if capacity <= 0 {
			capacity = DefaultCapacity
		}
		links := m.Load.Links + n.assigned[m.ID]
		if links >= capacity {
			continue
		}
		score := float64(links) / float64(capacity)
		if best < 0 || score < bestScore || (score == bestScore && m.Load.CPU < cands[best].Load.CPU) {
			best, bestScore = i, score
		}
	}
	if best < 0 {
		n.metrics.picks.WithLabelValues("").Inc()
		return Member{}, false
	}
	n.assigned[cands[best].ID]++
	n.metrics.picks.WithLabelValues(cands[best].ID).Inc()
	return cands[best], true
}

// rejoin contacts the seeds again whenever this node is alone.
func (n *Node) rejoin() {
	defer n.wg.Done()
	wait := 500 * time.Millisecond
	for {
		select {
		case <-n.stop:
			return
		case <-time.After(wait):
		}
		if n.ml.NumMembers() > 1 {
			wait = 5 * time.Second
			continue
		}
		if _, err := n.ml.Join(n.cfg.Seeds); err != nil {
			n.log.Debug("joining cluster seeds", "seeds", n.cfg.Seeds, "err", err)
			wait = min(2*wait, 5*time.Second)
			continue
		}
		n.log.Info("joined the cluster", "seeds", n.cfg.Seeds)
		wait = 5 * time.Second
	}
}

// memberlist callbacks. They run on memberlist's goroutines and must not
// block.

type delegate Node

func (d *delegate) NodeMeta(limit int) []byte {
	n := (*Node)(d)
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.encoded) > limit {
		// encode already holds it to MaxMeta; a smaller limit would be a
		// memberlist change, and empty metadata beats a panic.
		return nil
	}
	return slices.Clone(n.encoded)
}

func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

type events Node

func (e *events) NotifyJoin(mn *memberlist.Node)   { (*Node)(e).upsert(mn) }
func (e *events) NotifyUpdate(mn *memberlist.Node) { (*Node)(e).upsert(mn) }
func (e *events) NotifyLeave(mn *memberlist.Node) {
	n := (*Node)(e)
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.members, mn.Name)
	delete(n.assigned, mn.Name)
	n.noteChangeLocked()
	n.log.Info("node left or died", "peer", mn.Name)
}

func (n *Node) upsert(mn *memberlist.Node) {
	m, err := decodeMeta(mn.Meta)
	if err != nil || m.ID != mn.Name {
		n.log.Warn("ignoring a node with bad metadata", "peer", mn.Name, "err", err)
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.members[mn.Name] = &Member{Meta: m, Gossip: net.JoinHostPort(mn.Addr.String(), strconv.Itoa(int(mn.Port)))}
	// Its announcement counts the links we sent it.
	delete(n.assigned, mn.Name)
	n.noteChangeLocked()
}

// slogWriter turns memberlist's log lines ("[LEVEL] memberlist: …") into
// slog records.
type slogWriter struct{ log *slog.Logger }

var _ io.Writer = (*slogWriter)(nil)

func (w *slogWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := slog.LevelDebug
	switch {
	case strings.HasPrefix(line, "[ERR]"):
		level = slog.LevelError
	case strings.HasPrefix(line, "[WARN]"):
		level = slog.LevelWarn
	case strings.HasPrefix(line, "[INFO]"):
		level = slog.LevelInfo
	}
	if i := strings.Index(line, "] "); i >= 0 {
		line = line[i+2:]
	}
	w.log.Log(context.Background(), level, line)
	return len(p), nil
}
