package node

import (
	"context"
	"errors"
	"slices"
	"strings"

	"github.com/backchannel/backchannel/application"
	"github.com/backchannel/backchannel/groups"
	"github.com/backchannel/backchannel/internal/cluster"
	"github.com/backchannel/backchannel/internal/streamsync"
)

// clusterEdges picks a viewer's edge among the cluster's live edge nodes.
// Until edges pull streams from their origin, a viewer must play from a node
// that has the stream itself: one of those is preferred, the least loaded,
// and any edge is the fallback while the stream is not live anywhere (the
// viewer then waits for stream-status and retries).
type clusterEdges struct {
	cluster *cluster.Node
	view    func() *streamsync.View
}

var errNoEdge = errors.New("no edge node is alive")

func (c *clusterEdges) Pick(_ context.Context, _ groups.Attrs, stream string) (application.Endpoint, error) {
	edges := c.cluster.Members(cluster.RoleEdge)
	var holders []string
	if v := c.view(); v != nil {
		holders = v.Where(stream)
	}
	best := -1
	for i, m := range edges {
		if m.URL == "" {
			continue
		}
		if best < 0 || better(m, edges[best], holders) {
			best = i
		}
	}
	if best < 0 {
		return application.Endpoint{}, errNoEdge
	}
	m := edges[best]
	base := strings.TrimRight(m.URL, "/")
	return application.Endpoint{Edge: m.ID, WHEP: base + "/whep/" + stream, HLS: base + "/hls/" + stream + "/index.m3u8"}, nil
}

func better(a, b cluster.Member, holders []string) bool {
	ah, bh := slices.Contains(holders, a.ID), slices.Contains(holders, b.ID)
	if ah != bh {
		return ah
	}
	if a.Load.Viewers != b.Load.Viewers {
		return a.Load.Viewers < b.Load.Viewers
	}
	return a.Load.CPU < b.Load.CPU
}
