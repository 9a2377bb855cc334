package bus_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/backchannel/backchannel/application"
	"github.com/backchannel/backchannel/connection"
	"github.com/backchannel/backchannel/internal/bus"
	"github.com/backchannel/backchannel/internal/identity"
	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/redistest"
)

// TestTiersAcrossRedisRestart runs a real application server and a real
// connection server, each with its own Redis bus as separate processes
// would, and SIGKILLs redis-server while viewers join and report. After a
// restart with an empty database the tiers agree again: the late viewer's
// profile reached the application tier and its attributes the connection
// server's mirror, every telemetry report arrived once, and a group message
// reaches the stream group.
func TestTiersAcrossRedisRestart(t *testing.T) {
	srv := redistest.Start(t)
	o := bus.RedisOptions{Block: 100 * time.Millisecond, ResetGrace: 50 * time.Millisecond, ConfirmInterval: 20 * time.Millisecond}
	appBus := newRedisBus(t, srv.Addr(), o)
	connBus := newRedisBus(t, srv.Addr(), o)
	appResets, connResets := appBus.Resets(), connBus.Resets()

	app, err := application.New(application.Config{Bus: appBus, Edges: application.StaticEdge{ID: "e1"}, OperatorKey: "k", Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := connection.New(connection.Config{ID: "c1", Bus: connBus, Identity: identity.NewIssuer([]byte("secret")), Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/ws", conn.Handler())
	app.Routes(mux)
	web := httptest.NewServer(mux)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = app.Run(ctx) }()
	go func() { defer wg.Done(); _ = conn.Run(ctx) }()
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = conn.Shutdown(sctx)
		cancel()
		wg.Wait()
		web.Close()
	}()

	a := dialViewer(t, web.URL)
	waitUntil(t, 5*time.Second, "a's attributes in the connection server's mirror", func() bool {
		return slices.Contains(conn.LinkGroups(a.sid), "device:mobile")
	})
	a.send(`{"t":"watch","stream":"demo"}`)
	a.expect("endpoint")
	a.expect("stream-status")

	srv.Kill()
	// While Redis is down: a reports, b joins. Both wait in outboxes.
	const reports = 20
	for sn := 1; sn <= reports; sn++ {
		a.send(fmt.Sprintf(`{"t":"telemetry","sn":%d,"iv":5000,"sta":"p","play_ms":5000,"bl":1000}`, sn))
	}
	b := dialViewer(t, web.URL)
	time.Sleep(200 * time.Millisecond)
	srv.Restart()

	for name, c := range map[string]<-chan struct{}{"application": appResets, "connection": connResets} {
		select {
		case <-c:
		case <-time.After(5 * time.Second):
			t.Fatalf("the %s bus did not signal the reset", name)
		}
	}
	waitUntil(t, 5*time.Second, "b's profile at the application tier and its attributes at c1", func() bool {
		_, ok := app.Profile(b.sid)
		return ok && slices.Contains(conn.LinkGroups(b.sid), "device:mobile")
	})
	if !slices.Contains(conn.LinkGroups(a.sid), "stream:demo") {
		t.Fatalf("a left stream:demo in the mirror: %v", conn.LinkGroups(a.sid))
	}
	waitUntil(t, 5*time.Second, "every report counted once", func() bool {
		return globalReports(t, web.URL) == reports
	})
	app.StreamEvent(media.Event{Stream: "demo", Live: true})
	if st := a.expect("stream-status"); st["state"] != "live" || st["g"] != "stream:demo" {
		t.Fatalf("group message after the restart: %v", st)
	}
	time.Sleep(100 * time.Millisecond)
	if n := globalReports(t, web.URL); n != reports {
		t.Fatalf("%d reports counted, want %d", n, reports)
	}
}

type testViewer struct {
	t      *testing.T
	ws     *websocket.Conn
	frames chan map[string]any
	sid    string
}

func dialViewer(t *testing.T, base string) *testViewer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hdr := http.Header{}
	hdr.Set("User-Agent", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1")
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/ws", &websocket.DialOptions{HTTPHeader: hdr})
	if err != nil {
		t.Fatal(err)
	}
	v := &testViewer{t: t, ws: ws, frames: make(chan map[string]any, 64)}
	go func() {
		defer close(v.frames)
		for {
			_, data, err := ws.Read(context.Background())
			if err != nil {
				return
			}
			var m map[string]any
			_ = json.Unmarshal(data, &m)
			v.frames <- m
		}
	}()
	t.Cleanup(func() { _ = ws.CloseNow() })
	v.send(`{"t":"hello","lang":"pt-BR"}`)
	v.sid, _ = v.expect("welcome")["sid"].(string)
	return v
}

func (v *testViewer) send(s string) {
	v.t.Helper()
	if err := v.ws.Write(context.Background(), websocket.MessageText, []byte(s)); err != nil {
		v.t.Fatal(err)
	}
}

func (v *testViewer) expect(typ string) map[string]any {
	v.t.Helper()
	select {
	case m, ok := <-v.frames:
		if !ok || m["t"] != typ {
			v.t.Fatalf("got %v, want a %s frame", m, typ)
		}
		return m
	case <-time.After(5 * time.Second):
		v.t.Fatalf("no %s frame within 5 s", typ)
	}
	return nil
}

func globalReports(t *testing.T, base string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", base+"/api/v1/groups/global", nil)
	req.Header.Set("Authorization", "Bearer k")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var g struct {
		QoE struct {
			Total struct {
				Reports int `json:"reports"`
			} `json:"total"`
		} `json:"qoe"`
	}
	if err := json.Unmarshal(body, &g); err != nil {
		t.Fatalf("%s: %v", body, err)
	}
	return g.QoE.Total.Reports
}
