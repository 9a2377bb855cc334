package connection

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/backchannel/backchannel/groups"
	"github.com/backchannel/backchannel/internal/control"
)

// TestFanoutFigures checks that one group message reaches 1000 real links
// and logs how long that took (go test -v -run TestFanoutFigures).
func TestFanoutFigures(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the 1000-link fan-out run")
	}
	const links = 1000
	h := newHarness(t, func(c *Config) { c.RateLimit = 1000; c.RateBurst = 1000 })
	url := "ws" + strings.TrimPrefix(h.http.URL, "http") + "/ws"
	got := make(chan time.Time, links*10)
	var conns []*websocket.Conn
	var sids []string
	for i := 0; i < links; i++ {
		c, _, err := websocket.Dial(context.Background(), url, nil)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		_ = c.Write(context.Background(), websocket.MessageText, []byte(`{"t":"hello"}`))
		_, w, err := c.Read(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		sids = append(sids, strings.Split(strings.Split(string(w), `"sid":"`)[1], `"`)[0])
	}
	defer func() {
		for _, c := range conns {
			c.CloseNow()
		}
	}()
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if _, _, err := c.Read(context.Background()); err != nil {
					return
				}
				got <- time.Now()
			}
		}()
	}
	var attrs []groups.Mirror
	for _, sid := range sids {
		attrs = append(attrs, groups.SetAttrs(sid, groups.Attrs{"stream": "demo"}))
	}
	h.down(attrs...)
	waitFor(t, func() bool { return h.srv.GroupCount("stream:demo") == links })
	for round := 1; round <= 3; round++ {
		msg := control.EncodeGroup(control.StreamStatus{Stream: "demo", State: "live"}, "stream:demo", uint64(round), "e")
		start := time.Now()
		h.down(groups.SendGroup("stream:demo", msg, true))
		var last time.Time
		for i := 0; i < links; i++ {
			select {
			case last = <-got:
			case <-time.After(10 * time.Second):
				t.Fatalf("round %d: %d of %d links got the message", round, i, links)
			}
		}
		t.Logf("round %d: group message to %d links: all delivered in %v", round, links, last.Sub(start))
	}
}
