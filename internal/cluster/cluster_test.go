package cluster_test

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/backchannel/backchannel/internal/cluster"
)

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// start joins a node on loopback with fast failure detection.
func start(t *testing.T, meta cluster.Meta, seeds ...string) *cluster.Node {
	t.Helper()
	n, err := cluster.Join(cluster.Config{
		Meta:           meta,
		BindAddr:       "127.0.0.1",
		Seeds:          seeds,
		ProbeInterval:  100 * time.Millisecond,
		ProbeTimeout:   50 * time.Millisecond,
		GossipInterval: 20 * time.Millisecond,
		SuspicionMult:  2,
		UpdateInterval: 50 * time.Millisecond,
		Logger:         quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

func connMeta(id string, load cluster.Load) cluster.Meta {
	return cluster.Meta{ID: id, Roles: []cluster.Role{cluster.RoleConnection}, URL: "http://" + id + ".test",
		WS: "ws://" + id + ".test/ws", Region: "local", Lat: -23.5, Lon: -46.6, Load: load}
}

// three starts c1, c2, c3 (connection servers, capacity 1000) and waits
// until each sees all three.
func three(t *testing.T) []*cluster.Node {
	t.Helper()
	c1 := start(t, connMeta("c1", cluster.Load{Capacity: 1000}))
	c2 := start(t, connMeta("c2", cluster.Load{Capacity: 1000}), c1.Addr())
	c3 := start(t, connMeta("c3", cluster.Load{Capacity: 1000}), c1.Addr())
	nodes := []*cluster.Node{c1, c2, c3}
	for _, n := range nodes {
		eventually(t, 5*time.Second, n.ID()+" to see 3 members", func() bool { return len(n.Members(cluster.RoleConnection)) == 3 })
	}
	return nodes
}

func eventually(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// connect asks /connect over a real socket and returns the node it named.
func connect(t *testing.T, url string) (node, ws string, status int) {
	t.Helper()
	resp, err := http.Get(url + "/connect")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ URL, Node string }
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
	}
	return body.Node, body.URL, resp.StatusCode
}

func serve(t *testing.T, n *cluster.Node) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/connect", n.ConnectHandler())
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestConnectMovesAwayFromLoadedNode(t *testing.T) {
	nodes := three(t)
	lb := serve(t, nodes[2]) // any node answers /connect
	if err := nodes[0].SetLoad(cluster.Load{Links: 600, Capacity: 1000, CPU: 0.5}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "c1's load to reach c3", func() bool {
		for _, m := range nodes[2].Members(cluster.RoleConnection) {
			if m.ID == "c1" {
				return m.Load.Links == 600
			}
		}
		return false
	})
	counts := map[string]int{}
	for range 40 {
		node, ws, status := connect(t, lb)
		if status != http.StatusOK {
			t.Fatalf("/connect answered %d", status)
		}
		if ws != "ws://"+node+".test/ws" {
			t.Fatalf("url %q for node %s", ws, node)
		}
		counts[node]++
	}
	if counts["c1"] != 0 {
		t.Fatalf("the loaded node got %d of 40 new links: %v", counts["c1"], counts)
	}
	// Between load announcements the picker spreads over the idle ones.
	if counts["c2"] < 15 || counts["c3"] < 15 {
		t.Fatalf("new links not spread over the idle nodes: %v", counts)
	}
	// Now the others are the loaded ones: new links go to c1.
	for _, n := range nodes[1:] {
		if err := n.SetLoad(cluster.Load{Links: 900, Capacity: 1000}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 5*time.Second, "new links to move to c1", func() bool {
		node, _, _ := connect(t, lb)
		return node == "c1"
	})
}

func TestLeftNodeIsNotOffered(t *testing.T) {
	nodes := three(t)
	lb := serve(t, nodes[0])
	// c2 is the idlest, so it would be offered.
	for _, n := range []*cluster.Node{nodes[0], nodes[2]} {
		_ = n.SetLoad(cluster.Load{Links: 500, Capacity: 1000})
	}
	eventually(t, 5*time.Second, "c2 to be offered", func() bool { node, _, _ := connect(t, lb); return node == "c2" })
	if err := nodes[1].Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, "c2 to be gone after leaving", func() bool { return len(nodes[0].Members(cluster.RoleConnection)) == 2 })
	for range 20 {
		if node, _, _ := connect(t, lb); node == "c2" {
			t.Fatal("a node that left is still offered")
		}
	}
}

func TestKilledNodeIsNotOffered(t *testing.T) {
	nodes := three(t)
	lb := serve(t, nodes[0])
	for _, n := range []*cluster.Node{nodes[0], nodes[2]} {
		_ = n.SetLoad(cluster.Load{Links: 500, Capacity: 1000})
	}
	eventually(t, 5*time.Second, "c2 to be offered", func() bool { node, _, _ := connect(t, lb); return node == "c2" })
	_ = nodes[1].Close() // no leave message: the others must find out
	start := time.Now()
	eventually(t, 5*time.Second, "the killed node to stop being offered", func() bool {
		node, _, _ := connect(t, lb)
		return node != "c2"
	})
	t.Logf("killed node no longer offered after %v", time.Since(start).Round(time.Millisecond))
	for range 20 {
		if node, _, _ := connect(t, lb); node == "c2" {
			t.Fatal("the killed node is offered again")
		}
	}
}

func TestMetadataUpdatePropagates(t *testing.T) {
	c1 := start(t, connMeta("c1", cluster.Load{}))
	load := cluster.Load{Links: 7, Viewers: 3, CPU: 0.25}
	edge, err := cluster.Join(cluster.Config{
		Meta:           cluster.Meta{ID: "e1", Roles: []cluster.Role{cluster.RoleEdge, cluster.RoleIngest}, URL: "http://e1.test", Region: "sa-east", Lat: 1.5, Lon: 2.5},
		BindAddr:       "127.0.0.1",
		Seeds:          []string{c1.Addr()},
		ProbeInterval:  100 * time.Millisecond,
		UpdateInterval: 20 * time.Millisecond,
		LoadFunc:       func() cluster.Load { return load },
		Logger:         quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer edge.Close()
	eventually(t, 5*time.Second, "the edge's polled load at c1", func() bool {
		for _, m := range c1.Members(cluster.RoleEdge) {
			return m.Load == load && m.Region == "sa-east" && m.Lat == 1.5 && m.Has(cluster.RoleIngest)
		}
		return false
	})
	if got := c1.Members(cluster.RoleApplication); len(got) != 0 {
		t.Fatalf("application members: %v", got)
	}
	if got := c1.Members(""); len(got) != 2 {
		t.Fatalf("all members: %d, want 2", len(got))
	}
	if ch := c1.Members(cluster.RoleEdge); ch[0].Gossip != edge.Addr() {
		t.Fatalf("gossip address %q, want %q", ch[0].Gossip, edge.Addr())
	}
}

func TestConnectWithoutConnectionServers(t *testing.T) {
	app := start(t, cluster.Meta{ID: "a1", Roles: []cluster.Role{cluster.RoleApplication}})
	lb := serve(t, app)
	resp, err := http.Get(lb + "/connect")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
		resp.Header.Get("Content-Type") != "application/problem+json" || !strings.Contains(string(body), "no connection server") {
		t.Fatalf("got %d %v %s", resp.StatusCode, resp.Header, body)
	}
	post, err := http.Post(lb+"/connect", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	post.Body.Close()
	if post.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST /connect: %d", post.StatusCode)
	}
}

func TestFullNodeIsNotOffered(t *testing.T) {
	c1 := start(t, connMeta("c1", cluster.Load{Links: 10, Capacity: 10}))
	if m, ok := c1.PickConnection(); ok {
		t.Fatalf("a full node was offered: %+v", m)
	}
	_ = c1.SetLoad(cluster.Load{Links: 9, Capacity: 10})
	if _, ok := c1.PickConnection(); !ok {
		t.Fatal("a node with room was not offered")
	}
	// That pick counts until c1 announces again: it is full now.
	if _, ok := c1.PickConnection(); ok {
		t.Fatal("the picker ignored the link it just sent")
	}
}

func TestJoinRejectsBadConfig(t *testing.T) {
	for name, cfg := range map[string]cluster.Config{
		"no id":       {Meta: cluster.Meta{Roles: []cluster.Role{cluster.RoleEdge}}},
		"no roles":    {Meta: cluster.Meta{ID: "x"}},
		"no ws":       {Meta: cluster.Meta{ID: "x", Roles: []cluster.Role{cluster.RoleConnection}}},
		"meta > 512":  {Meta: cluster.Meta{ID: "x", Roles: []cluster.Role{cluster.RoleEdge}, URL: "http://" + strings.Repeat("a", 600)}},
		"bad seed":    {Meta: cluster.Meta{ID: "x", Roles: []cluster.Role{cluster.RoleEdge}}, BindAddr: "127.0.0.1", Seeds: []string{"no-port"}},
		"bad address": {Meta: cluster.Meta{ID: "x", Roles: []cluster.Role{cluster.RoleEdge}}, Advertise: "nope"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg.Logger = quiet()
			if cfg.BindAddr == "" {
				cfg.BindAddr = "127.0.0.1"
			}
			n, err := cluster.Join(cfg)
			if err == nil {
				n.Close()
				t.Fatal("accepted")
			}
		})
	}
	n := start(t, cluster.Meta{ID: "x", Roles: []cluster.Role{cluster.RoleEdge}})
	if err := n.SetLoad(cluster.Load{Links: 1}); err != nil {
		t.Fatal(err)
	}
}

func TestCloseLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	a, err := cluster.Join(cluster.Config{Meta: connMeta("a", cluster.Load{}), BindAddr: "127.0.0.1", ProbeInterval: 50 * time.Millisecond,
		LoadFunc: func() cluster.Load { return cluster.Load{} }, UpdateInterval: 10 * time.Millisecond, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	b, err := cluster.Join(cluster.Config{Meta: connMeta("b", cluster.Load{}), BindAddr: "127.0.0.1", Seeds: []string{a.Addr()}, ProbeInterval: 50 * time.Millisecond, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "two members", func() bool { return len(a.Members("")) == 2 })
	if err := b.Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines after Close, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

// Nodes start in any order: one whose seed is not up yet keeps trying, and
// joins once the seed appears.
func TestSeedThatStartsLater(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	early := start(t, connMeta("early", cluster.Load{}), fmt.Sprintf("127.0.0.1:%d", port))
	time.Sleep(300 * time.Millisecond)
	seed, err := cluster.Join(cluster.Config{
		Meta: connMeta("seed", cluster.Load{}), BindAddr: "127.0.0.1", BindPort: port,
		ProbeInterval: 100 * time.Millisecond, ProbeTimeout: 50 * time.Millisecond, GossipInterval: 20 * time.Millisecond,
		Logger: quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = seed.Close() })
	eventually(t, 10*time.Second, "the early node to find the seed", func() bool { return len(early.Members(cluster.RoleConnection)) == 2 })
	eventually(t, 5*time.Second, "the seed to see the early node", func() bool { return len(seed.Members(cluster.RoleConnection)) == 2 })
}
