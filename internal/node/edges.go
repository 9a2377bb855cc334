package node

import (
	"context"
	"errors"
	"math"
	"slices"
	"strings"
	"sync"

	"github.com/backchannel/backchannel/application"
	"github.com/backchannel/backchannel/edge/relay"
	"github.com/backchannel/backchannel/groups"
	"github.com/backchannel/backchannel/internal/cluster"
	"github.com/backchannel/backchannel/internal/streamsync"
)

// clusterEdges picks a viewer's edge among the cluster's live edge nodes:
// the nearest to the viewer's location (GeoIP) that has room, the least
// loaded of those about as near; without a location, the least loaded in
// the region of the viewer's connection server, else anywhere. Edges pull
// any stream from its origin, so where the stream is on air does not
// matter.
type clusterEdges struct {
	cluster *cluster.Node

	mu sync.Mutex
	// assigned counts the viewers sent to an edge since it last announced
	// its load, so that picks between two announcements spread over the
	// idle edges instead of all going to the one that looked idlest.
	assigned map[string]assignment
}

type assignment struct {
	announced int // the edge's viewer count when counting started
	n         int
}

var errNoEdge = errors.New("no edge node with room is alive")

// Pick implements application.EdgeDirectory.
func (c *clusterEdges) Pick(_ context.Context, v application.Viewer, stream string) (application.Endpoint, error) {
	members := c.cluster.Members("")
	edges := make([]cluster.Member, 0, len(members))
	regionOf := map[string]string{}
	for _, m := range members {
		regionOf[m.ID] = m.Region
		if m.Has(cluster.RoleEdge) {
			edges = append(edges, m)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.assigned == nil {
		c.assigned = map[string]assignment{}
	}
	extra := map[string]int{}
	for _, m := range edges {
		if a, ok := c.assigned[m.ID]; ok && a.announced == m.Load.Viewers {
			extra[m.ID] = a.n
		}
	}
	want := placement{located: v.Located, lat: v.Lat, lon: v.Lon, region: regionOf[v.Attrs[groups.AttrConn]]}
	m, ok := pickEdge(edges, want, extra)
	if !ok {
		return application.Endpoint{}, errNoEdge
	}
	a := c.assigned[m.ID]
	if a.announced != m.Load.Viewers {
		a = assignment{announced: m.Load.Viewers}
	}
	a.n++
	c.assigned[m.ID] = a
	return endpoint(m, stream), nil
}

func endpoint(m cluster.Member, stream string) application.Endpoint {
	base := strings.TrimRight(m.URL, "/")
	return application.Endpoint{Edge: m.ID, WHEP: base + "/whep/" + stream, HLS: base + "/hls/" + stream + "/index.m3u8"}
}

// placement is where a viewer should be served from.
type placement struct {
	located  bool
	lat, lon float64
	region   string // the region of the viewer's connection server, if known
	exclude  string // an edge not to pick (the full one redirecting)
}

// TieKm is the distance difference under which two edges count as equally
// near (the same metro area), so load decides.
const TieKm = 50

// unplacedEdgeKm ranks edges that announce no location after every located
// one.
const unplacedEdgeKm = 1e6

// defaultViewerCap is the capacity assumed for ranking an edge without a
// viewer cap.
const defaultViewerCap = 10_000

// pickEdge ranks edges for a placement; extra are viewers sent to an edge
// since it announced its load. Edges at their viewer cap are skipped.
func pickEdge(edges []cluster.Member, p placement, extra map[string]int) (cluster.Member, bool) {
	type cand struct {
		m    cluster.Member
		km   float64
		used float64
	}
	var cands []cand
	for _, m := range edges {
		if m.URL == "" || m.ID == p.exclude {
			continue
		}
		viewers := m.Load.Viewers + extra[m.ID]
		capacity := m.Load.ViewerCap
		if capacity > 0 && viewers >= capacity {
			continue
		}
		if capacity <= 0 {
			capacity = defaultViewerCap
		}
		c := cand{m: m, used: float64(viewers) / float64(capacity)}
		switch {
		case p.located && hasLocation(m.Meta):
			c.km = haversineKm(p.lat, p.lon, m.Lat, m.Lon)
		case p.located:
			c.km = unplacedEdgeKm
		case p.region != "" && m.Region != p.region:
			// Without a location, the viewer's region comes first.
			c.km = unplacedEdgeKm
		}
		cands = append(cands, c)
	}
	if len(cands) == 0 {
		return cluster.Member{}, false
	}
	best := slices.MinFunc(cands, func(a, b cand) int {
		if d := a.km - b.km; math.Abs(d) >= TieKm {
			if d < 0 {
				return -1
			}
			return 1
		}
		switch {
		case a.used != b.used:
			if a.used < b.used {
				return -1
			}
			return 1
		case a.m.Load.CPU != b.m.Load.CPU:
			if a.m.Load.CPU < b.m.Load.CPU {
				return -1
			}
			return 1
		}
		return strings.Compare(a.m.ID, b.m.ID)
	})
	return best.m, true
}

// hasLocation: (0, 0) is in the Gulf of Guinea, and what a node that
// announces no location sends.
func hasLocation(m cluster.Meta) bool { return m.Lat != 0 || m.Lon != 0 }

// haversineKm is the great-circle distance between two points.
func haversineKm(lat1, lon1, lat2, lon2 float64) float64 {
	const earthKm = 6371.0
	rad := math.Pi / 180
	dLat, dLon := (lat2-lat1)*rad, (lon2-lon1)*rad
	a := math.Sin(dLat/2)*math.Sin(dLat/2) + math.Cos(lat1*rad)*math.Cos(lat2*rad)*math.Sin(dLon/2)*math.Sin(dLon/2)
	return 2 * earthKm * math.Asin(math.Min(1, math.Sqrt(a)))
}

// siblings finds, for a full edge, the nearest other edge with room.
type siblings struct {
	cluster *cluster.Node
	self    cluster.Meta
}

func (s siblings) find(string) (string, bool) {
	p := placement{located: hasLocation(s.self), lat: s.self.Lat, lon: s.self.Lon, region: s.self.Region, exclude: s.self.ID}
	m, ok := pickEdge(s.cluster.Members(cluster.RoleEdge), p, nil)
	if !ok {
		return "", false
	}
	return m.URL, true
}

// clusterOrigins tells an edge's relay where a stream is on air: an edge
// of the same region that already relays it straight from its origin
// comes first (a tree: one pull from the origin feeds the region), then
// the origins themselves (ingest nodes with a publisher).
type clusterOrigins struct {
	self    cluster.Meta
	cluster *cluster.Node
	view    *streamsync.View
}

func (o clusterOrigins) Find(stream string) []relay.Upstream {
	alive := map[string]cluster.Member{}
	for _, m := range o.cluster.Members("") {
		alive[m.ID] = m
	}
	origins := o.view.Where(stream)
	var out []relay.Upstream
	if o.self.Region != "" {
		for _, info := range o.view.Relays(stream) {
			m, ok := alive[info.Node]
			// Only one level: an edge whose upstream is an origin, never
			// one pulling from this edge or from another edge.
			if !ok || info.Node == o.self.ID || m.Region != o.self.Region || m.URL == "" || !slices.Contains(origins, info.Publisher) {
				continue
			}
			if m.Load.ViewerCap > 0 && m.Load.Viewers >= m.Load.ViewerCap {
				continue
			}
			out = append(out, relay.Upstream{Node: m.ID, URL: m.URL})
		}
	}
	for _, id := range origins {
		if m, ok := alive[id]; ok && m.URL != "" && id != o.self.ID {
			out = append(out, relay.Upstream{Node: m.ID, URL: m.URL})
		}
	}
	return out
}
