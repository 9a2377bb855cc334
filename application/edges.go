package application

import (
	"context"
	"strings"

	"github.com/backchannel/backchannel/groups"
)

// Endpoint is where a viewer plays a stream from.
type Endpoint struct {
	Edge string // edge id; the viewer's edge attribute
	WHEP string // WHEP URL
	HLS  string // LL-HLS playlist URL, "" when the edge serves none
}

// EdgeDirectory picks the edge a viewer with the given attributes should
// play a stream from.
type EdgeDirectory interface {
	Pick(ctx context.Context, attrs groups.Attrs, stream string) (Endpoint, error)
}

// StaticEdge is a directory of one edge, the embedded deployment's. An
// empty BaseURL gives relative URLs ("/whep/demo") that browsers resolve
// against the page.
type StaticEdge struct {
	ID      string
	BaseURL string
}

// Pick implements EdgeDirectory.
func (e StaticEdge) Pick(_ context.Context, _ groups.Attrs, stream string) (Endpoint, error) {
	base := strings.TrimSuffix(e.BaseURL, "/")
	return Endpoint{Edge: e.ID, WHEP: base + "/whep/" + stream, HLS: base + "/hls/" + stream + "/index.m3u8"}, nil
}
