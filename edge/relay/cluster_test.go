package relay_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	pionmedia "github.com/pion/webrtc/v4/pkg/media"

	"github.com/backchannel/backchannel/internal/clustertest"
	"github.com/backchannel/backchannel/internal/geo/geotest"
	"github.com/backchannel/backchannel/internal/whipclient"
	"github.com/backchannel/backchannel/internal/whipclient/whiptest"
)

// TestClusterEdges runs one ingest node and three edges as separate
// processes on a real redis-server and memberlist gossip, with an
// application and a connection server:
//
//   - the application sends a viewer located in São Paulo (GeoIP) to the
//     São Paulo edge and one in Frankfurt to the Frankfurt edge, and
//     records the choice in the viewers' edge attribute;
//   - viewers on both edges get the stream, each edge pulling it once from
//     the ingest node;
//   - a third edge in the Frankfurt edge's region pulls from that edge, not
//     from the ingest node (a tree);
//   - the full São Paulo edge (--max-viewers 1) redirects a new viewer to
//     the nearest sibling with room;
//   - once the viewers leave, every edge drops its upstream after its
//     linger time.
func TestClusterEdges(t *testing.T) {
	dir := t.TempDir()
	cityDB, asnDB, err := geotest.WriteFixtures(dir, []geotest.FixtureCity{
		{Network: "127.0.0.2/32", Country: "BR", Continent: "SA", City: "São Paulo", Lat: -23.55, Lon: -46.63},
		{Network: "127.0.0.3/32", Country: "DE", Continent: "EU", City: "Frankfurt", Lat: 50.11, Lon: 8.68},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := clustertest.New(t)
	ingest := c.Start("ingest-1", "ingest")
	app := c.Start("app-1", "application", "--geoip-city", cityDB, "--geoip-asn", asnDB)
	c.Start("conn-1", "connection", "--allowed-origins", "127.0.0.1:*")
	edge := func(id, region string, lat, lon float64, extra ...string) *clustertest.Proc {
		args := append([]string{"--region", region, "--lat", fmt.Sprint(lat), "--lon", fmt.Sprint(lon), "--relay-linger", "1s"}, extra...)
		return c.Start(id, "edge", args...)
	}
	sp := edge("edge-sp", "sa", -23.55, -46.63, "--max-viewers", "1")
	fra := edge("edge-fra", "eu", 50.11, 8.68)
	par := edge("edge-par", "eu", 48.86, 2.35)
	// The ingest node serves WHEP too: four edges in the view of the
	// application (placement) and of the São Paulo edge (redirects).
	for _, p := range []*clustertest.Proc{app, sp} {
		if err := p.WaitMembers("edge", 4, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	publishKey, _ := ingest.Keys()
	_, operatorKey := app.Keys()

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	pub, err := whipclient.Publish(ctx, ingest.URL+"/whip/live", publishKey)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		frames := whiptest.H264Frames(300, 60, 5)
		tick := time.NewTicker(time.Second / 30)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			_ = pub.WriteVideo(pionmedia.Sample{Data: frames[i%len(frames)], Duration: time.Second / 30})
			_ = pub.WriteAudio(pionmedia.Sample{Data: []byte{0xfc, 1, 2, 3}, Duration: time.Second / 30})
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	// Placement by distance, recorded in the profile.
	wsURL, err := app.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	endpoints := map[string]map[string]any{}
	for _, from := range []string{"127.0.0.2", "127.0.0.3"} {
		cl := dialFrom(ctx, t, wsURL, app.URL, from)
		cl.send(map[string]any{"t": "hello", "ua": "edge-test"})
		cl.next("welcome")
		cl.send(map[string]any{"t": "watch", "stream": "live"})
		endpoints[from] = cl.next("endpoint")
	}
	if ep := endpoints["127.0.0.2"]; ep["edge"] != "edge-sp" || ep["whep"] != sp.URL+"/whep/live" || ep["hls"] != sp.URL+"/hls/live/index.m3u8" {
		t.Fatalf("viewer in São Paulo got %v", ep)
	}
	if ep := endpoints["127.0.0.3"]; ep["edge"] != "edge-fra" || ep["whep"] != fra.URL+"/whep/live" {
		t.Fatalf("viewer in Frankfurt got %v", ep)
	}
	for _, g := range []struct{ id, city string }{{"edge:edge-sp", "São Paulo"}, {"edge:edge-fra", "Frankfurt"}} {
		var v struct {
			Members   int                       `json:"members"`
			Breakdown map[string]map[string]int `json:"breakdown"`
		}
		if code := getJSON(t, app.URL+"/api/v1/groups/"+g.id+"?breakdown=city", operatorKey, &v); code != 200 || v.Members != 1 || v.Breakdown["city"][g.city] != 1 {
			t.Fatalf("group %s: %d %+v", g.id, code, v)
		}
	}

	// Viewers on both edges; one pull each from the ingest node.
	play := func(p *clustertest.Proc) (*whipclient.Player, *tap) {
		var tp tap
		pl, err := whipclient.Play(ctx, p.URL+"/whep/live", whipclient.OnRTP(tp.onRTP))
		if err != nil {
			t.Fatalf("play on %s: %v", p.ID, err)
		}
		return pl, &tp
	}
	spViewer, spTap := play(sp)
	fraViewer, fraTap := play(fra)
	for _, tp := range []*tap{spTap, fraTap} {
		waitFor(t, "frames on both edges", 15*time.Second, func() bool { f, _ := tp.video.H264Frames(); return len(f) > 30 && tp.audio.Len() > 30 })
	}
	waitFor(t, "two relay sessions at the ingest node", 10*time.Second, func() bool { return health(t, ingest).Viewers == 2 })

	// A tree: the Paris edge pulls from the Frankfurt edge (same region).
	parViewer, parTap := play(par)
	waitFor(t, "frames on the Paris edge", 15*time.Second, func() bool { f, _ := parTap.video.H264Frames(); return len(f) > 30 })
	if h := health(t, fra); h.Viewers != 2 || h.Relays != 1 {
		t.Fatalf("Frankfurt edge: %+v, want its viewer and the Paris edge's relay", h)
	}
	if h := health(t, ingest); h.Viewers != 2 {
		t.Fatalf("ingest node serves %d sessions, want the two first edges' only", h.Viewers)
	}

	// The São Paulo edge is full: a new viewer goes to the nearest
	// sibling with room, Paris.
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, sp.URL+"/whep/live", strings.NewReader(whiptest.Offer(t)))
	req.Header.Set("Content-Type", "application/sdp")
	res, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusTemporaryRedirect || res.Header.Get("Location") != par.URL+"/whep/live" {
		t.Fatalf("full edge answered %d, Location %q", res.StatusCode, res.Header.Get("Location"))
	}

	// Everyone leaves: the edges let go of their upstreams.
	for _, p := range []*whipclient.Player{spViewer, fraViewer, parViewer} {
		_ = p.Close()
	}
	for _, p := range []*clustertest.Proc{sp, fra, par} {
		waitFor(t, p.ID+" to drop its upstream", 15*time.Second, func() bool { h := health(t, p); return h.Relays == 0 && h.Streams == 0 })
	}
	waitFor(t, "no relay session left at the ingest node", 10*time.Second, func() bool { return health(t, ingest).Viewers == 0 })
}

type healthz struct {
	Viewers int `json:"viewers"`
	Streams int `json:"streams"`
	Relays  int `json:"relays"`
}

func health(t *testing.T, p *clustertest.Proc) healthz {
	t.Helper()
	var h healthz
	if code := getJSON(t, p.URL+"/healthz", "", &h); code != 200 {
		t.Fatalf("%s /healthz: %d", p.ID, code)
	}
	return h
}

func getJSON(t *testing.T, url, key string, v any) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode == http.StatusOK {
		if err := json.NewDecoder(res.Body).Decode(v); err != nil {
			t.Fatal(err)
		}
	}
	return res.StatusCode
}

// control is a viewer's control link.
type control struct {
	t    *testing.T
	ctx  context.Context
	conn *websocket.Conn
}

// dialFrom opens a control link from a given loopback address, which the
// application's GeoIP fixture places somewhere.
func dialFrom(ctx context.Context, t *testing.T, wsURL, origin, from string) *control {
	t.Helper()
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	hc := &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}}
	conn, _, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPClient: hc, HTTPHeader: http.Header{"Origin": {origin}}})
	if err != nil {
		t.Fatalf("dial %s from %s: %v", wsURL, from, err)
	}
	t.Cleanup(func() { conn.CloseNow() })
	return &control{t: t, ctx: ctx, conn: conn}
}

func (c *control) send(m map[string]any) {
	b, _ := json.Marshal(m)
	if err := c.conn.Write(c.ctx, websocket.MessageText, b); err != nil {
		c.t.Fatal(err)
	}
}

func (c *control) next(typ string) map[string]any {
	c.t.Helper()
	for {
		_, b, err := c.conn.Read(c.ctx)
		if err != nil {
			c.t.Fatalf("waiting for %s: %v", typ, err)
		}
		var m map[string]any
		if json.Unmarshal(b, &m) == nil && m["t"] == typ {
			return m
		}
	}
}
