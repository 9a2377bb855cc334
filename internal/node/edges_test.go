package node

import (
	"math"
	"testing"

	"github.com/backchannel/backchannel/internal/cluster"
)

// Great-circle distances as the spherical law of cosines gives them.
func TestHaversine(t *testing.T) {
	for _, c := range []struct {
		name                   string
		lat1, lon1, lat2, lon2 float64
		km                     float64
	}{
		{"São Paulo–Frankfurt", -23.5505, -46.6333, 50.1109, 8.6821, 9829},
		{"Paris–London", 48.8566, 2.3522, 51.5074, -0.1278, 344},
		{"same point", 10, 10, 10, 10, 0},
		{"antipodes", 0, 0, 0, 180, math.Pi * 6371},
	} {
		if got := haversineKm(c.lat1, c.lon1, c.lat2, c.lon2); math.Abs(got-c.km) > 10 {
			t.Errorf("%s: %.0f km, want %.0f", c.name, got, c.km)
		}
	}
}

func edgeMember(id, region string, lat, lon float64, viewers, capacity int, cpu float64) cluster.Member {
	return cluster.Member{Meta: cluster.Meta{ID: id, Roles: []cluster.Role{cluster.RoleEdge}, URL: "http://" + id, Region: region,
		Lat: lat, Lon: lon, Load: cluster.Load{Viewers: viewers, ViewerCap: capacity, CPU: cpu}}}
}

// The nearest edge with room wins; edges about as near are told apart by
// load; full edges are skipped; without a location the viewer's region
// (its connection server's) comes first, and load decides.
func TestPickEdge(t *testing.T) {
	sp := edgeMember("sp", "sa", -23.55, -46.63, 500, 1000, 0.5)
	sp2 := edgeMember("sp2", "sa", -23.60, -46.70, 100, 1000, 0.9) // same metro area, less loaded
	rio := edgeMember("rio", "sa", -22.91, -43.17, 0, 1000, 0.1)
	fra := edgeMember("fra", "eu", 50.11, 8.68, 0, 0, 0)
	nowhere := edgeMember("nowhere", "", 0, 0, 0, 0, 0)
	saoPaulo := placement{located: true, lat: -23.5, lon: -46.6}
	berlin := placement{located: true, lat: 52.52, lon: 13.40}

	for _, c := range []struct {
		name  string
		edges []cluster.Member
		p     placement
		extra map[string]int
		want  string
	}{
		{"nearest", []cluster.Member{fra, rio, sp}, saoPaulo, nil, "sp"},
		{"nearest for Europe", []cluster.Member{fra, rio, sp}, berlin, nil, "fra"},
		{"tie goes to the less loaded", []cluster.Member{sp, sp2, rio}, saoPaulo, nil, "sp2"},
		{"assigned viewers count as load", []cluster.Member{sp, sp2}, saoPaulo, map[string]int{"sp2": 450}, "sp"},
		{"full edge skipped", []cluster.Member{edgeMember("sp", "sa", -23.55, -46.63, 1000, 1000, 0), rio}, saoPaulo, nil, "rio"},
		{"edges without a location come last", []cluster.Member{nowhere, fra}, saoPaulo, nil, "fra"},
		{"no location: the viewer's region", []cluster.Member{fra, sp, rio}, placement{region: "sa"}, nil, "rio"},
		{"no location, no region: least loaded", []cluster.Member{sp, sp2, fra}, placement{}, nil, "fra"},
		{"no location, region full: anywhere", []cluster.Member{edgeMember("sp", "sa", 0, 0, 5, 5, 0), fra}, placement{region: "sa"}, nil, "fra"},
		{"excluded", []cluster.Member{sp, rio}, placement{located: true, lat: -23.5, lon: -46.6, exclude: "sp"}, nil, "rio"},
	} {
		got, ok := pickEdge(c.edges, c.p, c.extra)
		if !ok || got.ID != c.want {
			t.Errorf("%s: picked %q (%v), want %q", c.name, got.ID, ok, c.want)
		}
	}
	if _, ok := pickEdge([]cluster.Member{edgeMember("full", "", 0, 0, 3, 3, 0)}, saoPaulo, nil); ok {
		t.Error("picked a full edge")
	}
	if _, ok := pickEdge(nil, saoPaulo, nil); ok {
		t.Error("picked from no edges")
	}
}
