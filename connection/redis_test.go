package connection_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
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

// TestReannounceRebuildsANewApplicationServer: Redis restarts with an
// empty database while the application server that knew the links is
// gone; a fresh application server learns every open link from the
// connection server's re-announcement and can reach it again.
func TestReannounceRebuildsANewApplicationServer(t *testing.T) {
	srv := redistest.Start(t)
	quiet := slog.New(slog.DiscardHandler)
	newBus := func() *bus.Redis {
		b, err := bus.NewRedis(bus.RedisOptions{Addr: srv.Addr(), Block: 100 * time.Millisecond, ResetGrace: 50 * time.Millisecond,
			ConfirmInterval: 20 * time.Millisecond, RetryDelay: 5 * time.Millisecond, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}
	connBus := newBus()
	conn, err := connection.New(connection.Config{ID: "c1", Bus: connBus, Identity: identity.NewIssuer([]byte("s")), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	web := httptest.NewServer(conn.Handler())
	defer web.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = conn.Run(ctx) }()
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = conn.Shutdown(sctx)
		cancel()
		wg.Wait()
	}()
	startApp := func() (*application.Server, context.CancelFunc) {
		app, err := application.New(application.Config{Bus: newBus(), Edges: application.StaticEdge{ID: "e1"}, OperatorKey: "k", Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		actx, acancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = app.Run(actx) }()
		return app, func() { acancel(); <-done }
	}
	app1, stop1 := startApp()

	dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer dcancel()
	ws, _, err := websocket.Dial(dctx, "ws"+strings.TrimPrefix(web.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	frames := make(chan map[string]any, 16)
	go func() {
		for {
			_, data, err := ws.Read(context.Background())
			if err != nil {
				close(frames)
				return
			}
			var m map[string]any
			_ = json.Unmarshal(data, &m)
			frames <- m
		}
	}()
	next := func(typ string) map[string]any {
		t.Helper()
		for {
			select {
			case m, ok := <-frames:
				if !ok {
					t.Fatal("link closed")
				}
				if m["t"] == typ {
					return m
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("no %s", typ)
			}
		}
	}
	_ = ws.Write(dctx, websocket.MessageText, []byte(`{"t":"hello","lang":"pt-BR"}`))
	sid := next("welcome")["sid"].(string)
	_ = ws.Write(dctx, websocket.MessageText, []byte(`{"t":"watch","stream":"demo"}`))
	next("endpoint")
	next("stream-status") // the link's own, with seq
	if _, ok := app1.Profile(sid); !ok {
		t.Fatal("the first application server does not know the link")
	}

	// The application server goes away, and Redis loses everything.
	stop1()
	srv.Kill()
	srv.Restart()
	app2, stop2 := startApp()
	defer stop2()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if p, ok := app2.Profile(sid); ok {
			if p.Conn != "c1" || p.Facts.IP != "127.0.0.1" || !strings.Contains(string(p.Facts.Hello), `"lang":"pt-BR"`) {
				t.Fatalf("rebuilt profile %+v", p)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the new application server never learned the open link")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// It can reach the link's stream group through c1 again.
	app2.StreamEvent(media.Event{Stream: "demo", Live: true})
	if st := next("stream-status"); st["state"] != "live" || st["g"] != "stream:demo" {
		t.Fatalf("group message from the new application server: %v", st)
	}
}
