package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/backchannel/backchannel/internal/whipclient"
	"github.com/backchannel/backchannel/internal/whipclient/whiptest"
)

type controlClient struct {
	t    *testing.T
	conn *websocket.Conn
}

func dialControl(t *testing.T, base string) *controlClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var connect struct{ URL string }
	res, err := http.Get(base + "/connect")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.NewDecoder(res.Body).Decode(&connect); err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	conn, _, err := websocket.Dial(ctx, connect.URL, &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {base}}})
	if err != nil {
		t.Fatalf("dial %s: %v", connect.URL, err)
	}
	t.Cleanup(func() { conn.CloseNow() })
	return &controlClient{t: t, conn: conn}
}

func (c *controlClient) send(v any) {
	c.t.Helper()
	b, _ := json.Marshal(v)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.conn.Write(ctx, websocket.MessageText, b); err != nil {
		c.t.Fatal(err)
	}
}

// next reads messages until one of type typ arrives.
func (c *controlClient) next(typ string) map[string]any {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		_, b, err := c.conn.Read(ctx)
		if err != nil {
			c.t.Fatalf("waiting for %q: %v", typ, err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			c.t.Fatalf("bad frame %s: %v", b, err)
		}
		if m["t"] == typ {
			return m
		}
	}
}

// TestControlLinkFollowsABroadcast: a viewer's control link gets its endpoint,
// then stream-status live when a WHIP broadcast starts and offline when it
// ends; the endpoint it was given plays the broadcast.
func TestControlLinkFollowsABroadcast(t *testing.T) {
	n := startNode(t, false)
	viewer := dialControl(t, n.URL())
	viewer.send(map[string]any{"t": "hello", "ua": "e2e-test", "lang": "en"})
	welcome := viewer.next("welcome")
	if welcome["uid"] == "" || welcome["token"] == "" {
		t.Fatalf("welcome %v", welcome)
	}
	viewer.send(map[string]any{"t": "watch", "stream": "match"})
	ep := viewer.next("endpoint")
	if ep["stream"] != "match" || ep["edge"] != "e2e" || ep["seq"] == nil {
		t.Fatalf("endpoint %v", ep)
	}
	if st := viewer.next("stream-status"); st["state"] != "offline" {
		t.Fatalf("before the broadcast: %v", st)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pub, err := whipclient.Publish(ctx, n.URL()+"/whip/match", n.PublishKey())
	if err != nil {
		t.Fatal(err)
	}
	live := viewer.next("stream-status")
	if live["state"] != "live" || live["g"] != "stream:match" || live["off"] == nil || live["ep"] == nil {
		t.Fatalf("on air: %v", live)
	}

	whep, err := url.Parse(n.URL())
	if err != nil {
		t.Fatal(err)
	}
	whep, _ = whep.Parse(ep["whep"].(string))
	var got atomic.Int64
	player, err := whipclient.Play(ctx, whep.String(), whipclient.OnRTP(func(tr *webrtc.TrackRemote, p *rtp.Packet) {
		if tr.Kind() == webrtc.RTPCodecTypeVideo {
			got.Add(1)
		}
	}))
	if err != nil {
		t.Fatalf("playing the endpoint %s: %v", whep, err)
	}
	defer player.Close()
	frames := whiptest.H264Frames(60, 30, 1)
	for _, f := range frames {
		if err := pub.WriteVideo(sampleOf(f)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(33 * time.Millisecond)
	}
	if got.Load() == 0 {
		t.Fatal("the endpoint's WHEP session received no video")
	}

	if err := pub.Close(); err != nil {
		t.Fatal(err)
	}
	if st := viewer.next("stream-status"); st["state"] != "offline" {
		t.Fatalf("after the broadcast: %v", st)
	}
}
