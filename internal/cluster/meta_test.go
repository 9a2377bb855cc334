package cluster

import (
	"strings"
	"testing"
)

// FuzzDecodeMeta feeds gossip metadata as any peer could send it.
func FuzzDecodeMeta(f *testing.F) {
	good, _ := Meta{ID: "c1", Roles: []Role{RoleConnection}, WS: "ws://c1/ws", Load: Load{Links: 3, Capacity: 10, CPU: 0.5}}.encode()
	f.Add(good)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"id":"x","r":["edge"],"ld":{"l":-5,"cpu":1e308}}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMeta(b)
		if err != nil {
			return
		}
		if m.ID == "" {
			t.Fatal("accepted metadata without id")
		}
	})
}

func TestMetaFitsMemberlist(t *testing.T) {
	m := Meta{ID: "connection-server-042", Roles: []Role{RoleConnection, RoleApplication, RoleEdge, RoleIngest},
		URL: "https://" + strings.Repeat("c", 100) + ".example.com", WS: "wss://" + strings.Repeat("c", 100) + ".example.com/ws",
		Region: "sa-east-1", Lat: -23.55052, Lon: -46.633308, Load: Load{Links: 250000, Capacity: 500000, Viewers: 100000, ViewerCap: 200000, Egress: 250000000, CPU: 0.876543}}
	b, err := m.encode()
	if err != nil {
		t.Fatalf("realistic metadata rejected: %v", err)
	}
	got, err := decodeMeta(b)
	if err != nil || got.ID != m.ID || got.Load != m.Load || got.WS != m.WS || len(got.Roles) != 4 {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	t.Logf("%d bytes of %d", len(b), MaxMeta)
}
