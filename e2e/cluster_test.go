package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/backchannel/backchannel/internal/clustertest"
	"github.com/backchannel/backchannel/internal/whipclient"
)

// TestClusterOfProcesses runs the tiers as separate processes over a real
// redis-server and memberlist gossip: a viewer found through /connect on
// any node follows a broadcast on the ingest node, and when its connection
// server is SIGKILLed it reconnects through /connect to the other one as the
// same user and gets its endpoint and the stream's state again.
func TestClusterOfProcesses(t *testing.T) {
	c := clustertest.New(t)
	origins := []string{"--allowed-origins", "127.0.0.1:*"}
	ingest := c.Start("ingest-1", "ingest")
	app := c.Start("app-1", "application")
	conns := map[string]*clustertest.Proc{}
	for _, id := range []string{"conn-1", "conn-2"} {
		conns[id] = c.Start(id, "connection", origins...)
	}
	publishKey, _ := ingest.Keys()
	_, operatorKey := app.Keys()
	if publishKey == "" || operatorKey == "" {
		t.Fatalf("keys not printed: %q %q", publishKey, operatorKey)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := app.WaitMembers("edge", 1, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	wsURL := waitConnect(ctx, t, app, "")
	viewer := dialWS(t, wsURL, app.URL)
	viewer.send(map[string]any{"t": "hello", "ua": "cluster-test"})
	welcome := viewer.next("welcome")
	viewer.send(map[string]any{"t": "watch", "stream": "clip"})
	ep := viewer.next("endpoint")
	if ep["edge"] != "ingest-1" || ep["whep"] != ingest.URL+"/whep/clip" {
		t.Fatalf("endpoint %v, want the ingest node's WHEP", ep)
	}
	if st := viewer.next("stream-status"); st["state"] != "offline" {
		t.Fatalf("before the broadcast: %v", st)
	}

	pub, err := whipclient.Publish(ctx, ingest.URL+"/whip/clip", publishKey)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if st := viewer.next("stream-status"); st["state"] != "live" || st["g"] != "stream:clip" {
		t.Fatalf("on air: %v", st)
	}
	var streams struct {
		Streams []struct {
			Name string `json:"name"`
		} `json:"streams"`
	}
	if code := apiGetURL(t, app.URL, operatorKey, "/streams", &streams); code != 200 || len(streams.Streams) != 1 || streams.Streams[0].Name != "clip" {
		t.Fatalf("GET /streams on the application node: %d %+v", code, streams)
	}

	// SIGKILL the viewer's connection server.
	var victim *clustertest.Proc
	for _, p := range conns {
		if strings.HasPrefix(wsURL, "ws"+strings.TrimPrefix(p.URL, "http")) {
			victim = p
		}
	}
	if victim == nil {
		t.Fatalf("%s is none of the connection servers", wsURL)
	}
	victim.Kill()
	if _, _, err := viewer.conn.Read(ctx); err == nil {
		t.Fatal("the link survived its server's death")
	}
	again := waitConnect(ctx, t, app, wsURL)
	viewer = dialWS(t, again, app.URL)
	viewer.send(map[string]any{"t": "hello", "token": welcome["token"]})
	if w := viewer.next("welcome"); w["uid"] != welcome["uid"] {
		t.Fatalf("reconnected as %v, was %v", w["uid"], welcome["uid"])
	}
	viewer.send(map[string]any{"t": "watch", "stream": "clip"})
	if ep := viewer.next("endpoint"); ep["edge"] != "ingest-1" {
		t.Fatalf("endpoint after reconnect %v", ep)
	}
	if st := viewer.next("stream-status"); st["state"] != "live" {
		t.Fatalf("state after reconnect: %v", st)
	}
}

// waitConnect polls a node's /connect until it offers a server other than
// avoid (one that was killed: gossip takes a few seconds to notice).
func waitConnect(ctx context.Context, t *testing.T, p *clustertest.Proc, avoid string) string {
	t.Helper()
	for {
		u, err := p.Connect(ctx)
		if err == nil && u != avoid {
			return u
		}
		select {
		case <-ctx.Done():
			t.Fatalf("/connect on %s never offered a live server (last: %q, %v)", p.ID, u, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func dialWS(t *testing.T, wsURL, origin string) *controlClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {origin}}})
	if err != nil {
		t.Fatalf("dial %s: %v", wsURL, err)
	}
	t.Cleanup(func() { conn.CloseNow() })
	return &controlClient{t: t, conn: conn}
}

func apiGetURL(t *testing.T, base, key, path string, v any) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/api/v1"+path, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode == http.StatusOK && v != nil {
		if err := json.NewDecoder(res.Body).Decode(v); err != nil {
			t.Fatal(err)
		}
	}
	return res.StatusCode
}

// TestLoopbackClusterScript keeps deploy/loopback-cluster.sh working: it
// starts redis, an ingest node, an application server and two connection
// servers, checks them and stops.
func TestLoopbackClusterScript(t *testing.T) {
	bin := clustertest.Binary(t)
	base := 20000 + rand.IntN(20)*500
	cmd := exec.Command("../deploy/loopback-cluster.sh", "2")
	cmd.Env = append(os.Environ(), "BACKCHANNEL="+bin, "CHECK=1", "STATE="+t.TempDir(), fmt.Sprintf("BASE_PORT=%d", base))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("loopback-cluster.sh: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "check: /connect → ") {
		t.Fatalf("no /connect check in the output:\n%s", out)
	}
}
