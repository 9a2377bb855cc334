package application_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/backchannel/backchannel/internal/clustertest"
)

// player is a scripted viewer that behaves like the web player: it finds a
// connection server through /connect, says hello with its identity token,
// watches the stream, keeps its votes until they are acknowledged and
// resends them after every reconnect.
type player struct {
	t      *testing.T
	nodes  []*clustertest.Proc
	stream string

	mu      sync.Mutex
	token   string
	pending map[string]string // poll → vote frame, until acked
	ws      *websocket.Conn
	polls   chan string // poll ids seen
	acked   atomic.Int64
	links   atomic.Int64 // links opened
}

func (p *player) run(ctx context.Context) {
	for ctx.Err() == nil {
		p.session(ctx)
		// Reconnect with jitter, like the player.
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(100+rand.IntN(300)) * time.Millisecond):
		}
	}
}

func (p *player) session(ctx context.Context) {
	var url string
	for _, n := range p.nodes {
		if n.Exited() {
			continue
		}
		if u, err := n.Connect(ctx); err == nil {
			url = u
			break
		}
	}
	if url == "" {
		return
	}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	ws, _, err := websocket.Dial(dctx, url, nil)
	cancel()
	if err != nil {
		return
	}
	defer ws.CloseNow()
	p.links.Add(1)
	p.mu.Lock()
	hello, _ := json.Marshal(map[string]any{"t": "hello", "token": p.token, "ua": "cluster-player"})
	p.mu.Unlock()
	if ws.Write(ctx, websocket.MessageText, hello) != nil {
		return
	}
	for {
		_, data, err := ws.Read(ctx)
		if err != nil {
			p.mu.Lock()
			p.ws = nil
			p.mu.Unlock()
			return
		}
		var m map[string]any
		json.Unmarshal(data, &m)
		switch m["t"] {
		case "welcome":
			p.mu.Lock()
			p.token = m["token"].(string)
			p.ws = ws
			frames := [][]byte{[]byte(`{"t":"watch","stream":"` + p.stream + `"}`)}
			for _, f := range p.pending {
				frames = append(frames, []byte(f))
			}
			p.mu.Unlock()
			for _, f := range frames {
				ws.Write(ctx, websocket.MessageText, f)
			}
		case "poll":
			select {
			case p.polls <- m["id"].(string):
			default:
			}
		case "ack":
			p.mu.Lock()
			for poll, f := range p.pending {
				if strings.Contains(f, `"id":"`+m["id"].(string)+`"`) {
					delete(p.pending, poll)
					p.acked.Add(1)
				}
			}
			p.mu.Unlock()
		case "error":
			if m["id"] != nil {
				p.t.Errorf("vote refused: %s", data)
			}
		}
	}
}

// vote records a vote and sends it if the link is up.
func (p *player) vote(ctx context.Context, poll string, choice int, id string) {
	f := fmt.Sprintf(`{"t":"vote","poll":%q,"choice":%d,"id":%q}`, poll, choice, id)
	p.mu.Lock()
	p.pending[poll] = f
	ws := p.ws
	p.mu.Unlock()
	if ws != nil {
		ws.Write(ctx, websocket.MessageText, []byte(f))
	}
}

func (p *player) unacked() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.pending)
}

func apiJSON(t *testing.T, method, url, key string, body any, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, rd)
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	if out != nil {
		json.Unmarshal(raw, out)
	}
	return res.StatusCode
}

// TestVotesExactAcrossSIGKILL: a cluster of processes on a real Redis.
// Players vote in waves; between waves the application server is
// SIGKILLed (and a new one started: poll state comes back from Redis) and
// then a connection server is SIGKILLed (its players reconnect to the
// other one). Players resend what was not acknowledged, some change their
// vote, and the final tally equals exactly one vote per user, the last one
// each cast.
func TestVotesExactAcrossSIGKILL(t *testing.T) {
	c := clustertest.New(t)
	c.Start("ingest-1", "ingest") // an edge for the players' watch
	app := c.Start("app-1", "application")
	conns := []*clustertest.Proc{c.Start("conn-1", "connection"), c.Start("conn-2", "connection")}
	_, key := app.Keys()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	const players = 40
	ps := make([]*player, players)
	var wg sync.WaitGroup
	for i := range ps {
		// Half start on each connection server.
		order := []*clustertest.Proc{conns[i%2], conns[1-i%2]}
		ps[i] = &player{t: t, nodes: order, stream: "final", pending: map[string]string{}, polls: make(chan string, 8)}
		wg.Add(1)
		go func() { defer wg.Done(); ps[i].run(ctx) }()
	}
	defer func() { cancel(); wg.Wait() }()
	waitUntil(t, 20*time.Second, "every player linked", func() bool {
		var g struct{ Members int }
		apiJSON(t, "GET", app.URL+"/api/v1/groups/stream:final", key, nil, &g)
		return g.Members == players
	})

	var poll struct{ ID string }
	if code := apiJSON(t, "POST", app.URL+"/api/v1/polls", key, map[string]any{"stream": "final", "question": "Who?", "choices": []string{"a", "b", "c"}}, &poll); code != 201 {
		t.Fatalf("create poll: %d", code)
	}
	want := make([]int, players) // each player's last choice
	castWave := func(wave int, who func(i int) bool) {
		for i, p := range ps {
			if !who(i) {
				continue
			}
			want[i] = (i + wave) % 3
			p.vote(ctx, poll.ID, want[i], fmt.Sprintf("w%d-%d", wave, i))
		}
	}
	allAcked := func(what string) {
		t.Helper()
		waitUntil(t, 60*time.Second, what, func() bool {
			for _, p := range ps {
				if p.unacked() > 0 {
					return false
				}
			}
			return true
		})
	}

	// Wave 1: half the players vote; the application server dies right
	// after, with votes in flight.
	castWave(1, func(i int) bool { return i < players/2 })
	time.Sleep(15 * time.Millisecond)
	app.Kill()
	// Wave 2 while no application server runs: everybody votes (the first
	// half changes its vote).
	castWave(2, func(int) bool { return true })
	app2 := c.Start("app-2", "application")
	allAcked("all votes acked by the new application server")

	// Wave 3: a third of the players change their vote, and a connection
	// server dies mid-wave.
	castWave(3, func(i int) bool { return i%3 == 0 })
	conns[0].Kill()
	allAcked("all votes acked after the connection server died")

	var res struct {
		Counts []int64 `json:"counts"`
		Total  int64   `json:"total"`
	}
	expect := []int64{0, 0, 0}
	for _, w := range want {
		expect[w]++
	}
	waitUntil(t, 10*time.Second, "exact tally", func() bool {
		apiJSON(t, "GET", app2.URL+"/api/v1/polls/"+poll.ID+"/results", key, nil, &res)
		return slices.Equal(res.Counts, expect)
	})
	var links int64
	for _, p := range ps {
		links += p.links.Load()
	}
	t.Logf("tally %v over %d players, %d links opened in all", res.Counts, players, links)
	if res.Total != players {
		t.Fatalf("total %d, want %d", res.Total, players)
	}
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
