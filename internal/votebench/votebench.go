// Package votebench drives the vote path end to end for the benchmark: it
// creates polls through the REST API, opens one WebSocket control link per
// voter (each its own anonymous identity, from several loopback source
// addresses), has every voter vote in every poll — each vote its own frame,
// paced under the connection server's per-link rate limit — follows every
// poll's live results stream, and checks that the tallies the API reports
// equal what was sent.
package votebench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// Config of one run.
type Config struct {
	URL       string        // base URL of the node (http://127.0.0.1:8080)
	APIKey    string        // operator or broadcaster key
	Stream    string        // stream the polls are for (default "bench")
	Polls     int           // concurrent polls (10)
	Voters    int           // voters, each on its own link and identity (15000)
	Choices   int           // choices per poll (4)
	VoteEvery time.Duration // pause between one voter's votes (60 ms: under 20 frames/s per link)
	Sources   []string      // local addresses to dial from (127.0.0.1..4)
	Dialers   int           // links opened in parallel (256)
	Log       func(format string, args ...any)
}

// Report is what a run measured.
type Report struct {
	Voters, Polls   int
	VotesSent       int64
	Acks            int64
	Errors          int64
	ConnectSeconds  float64
	VoteSeconds     float64 // first vote sent → last ack received
	VotesPerSecond  float64
	LatencyP50MS    float64 // vote sent → visible in the broadcaster's live results
	LatencyP99MS    float64
	LatencySamples  int
	TalliesExact    bool
	TallyMismatches []string
}

func (c *Config) defaults() {
	if c.Stream == "" {
		c.Stream = "bench"
	}
	if c.Polls <= 0 {
		c.Polls = 10
	}
	if c.Voters <= 0 {
		c.Voters = 15000
	}
	if c.Choices < 2 {
		c.Choices = 4
	}
	if c.VoteEvery <= 0 {
		c.VoteEvery = 60 * time.Millisecond
	}
	if len(c.Sources) == 0 {
		c.Sources = []string{"127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"}
	}
	if c.Dialers <= 0 {
		c.Dialers = 256
	}
	if c.Log == nil {
		c.Log = func(string, ...any) {}
	}
}

type voter struct {
	ws   *websocket.Conn
	acks atomic.Int64
}

// Run performs one benchmark run.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.defaults()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ids := make([]string, cfg.Polls)
	for i := range ids {
		choices := make([]string, cfg.Choices)
		for j := range choices {
			choices[j] = fmt.Sprintf("choice %d", j)
		}
		var out struct{ ID string }
		if err := apiCall(ctx, cfg, "POST", "/api/v1/polls", map[string]any{"stream": cfg.Stream, "question": fmt.Sprintf("bench poll %d", i), "choices": choices}, &out); err != nil {
			return nil, fmt.Errorf("creating poll %d: %w", i, err)
		}
		ids[i] = out.ID
	}
	cfg.Log("created %d polls", len(ids))

	// Live results streams: one per poll, as the broadcaster would follow.
	lat := newLatency(cfg.Polls)
	var sseWG sync.WaitGroup
	for i, id := range ids {
		sseWG.Add(1)
		go func() { defer sseWG.Done(); follow(ctx, cfg, id, i, lat) }()
	}

	start := time.Now()
	wsURL := "ws" + strings.TrimPrefix(cfg.URL, "http") + "/ws"
	voters := make([]*voter, cfg.Voters)
	var dialErr atomic.Value
	var next atomic.Int64
	var dwg sync.WaitGroup
	for range cfg.Dialers {
		dwg.Add(1)
		go func() {
			defer dwg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= cfg.Voters || ctx.Err() != nil {
					return
				}
				v, err := dialVoter(ctx, wsURL, cfg.Sources[i%len(cfg.Sources)], cfg.Stream)
				if err != nil {
					dialErr.Store(fmt.Errorf("voter %d: %w", i, err))
					cancel()
					return
				}
				voters[i] = v
			}
		}()
	}
	dwg.Wait()
	defer func() {
		for _, v := range voters {
			if v != nil {
				v.ws.CloseNow()
			}
		}
	}()
	if err, _ := dialErr.Load().(error); err != nil {
		return nil, err
	}
	rep := &Report{Voters: cfg.Voters, Polls: cfg.Polls, ConnectSeconds: time.Since(start).Seconds()}
	cfg.Log("%d links open in %.1f s", cfg.Voters, rep.ConnectSeconds)

	// Every voter votes in every poll, in its own random order, with a
	// choice the driver remembers for the tally check.
	want := make([][]int64, cfg.Polls)
	for i := range want {
		want[i] = make([]int64, cfg.Choices)
	}
	choices := make([][]int, cfg.Voters)
	for i := range choices {
		choices[i] = make([]int, cfg.Polls)
		for p := range cfg.Polls {
			c := rand.IntN(cfg.Choices)
			choices[i][p] = c
			want[p][c]++
		}
	}
	var sent, errs atomic.Int64
	voteStart := time.Now()
	var vwg sync.WaitGroup
	for i, v := range voters {
		vwg.Add(2)
		go func() { defer vwg.Done(); readAcks(ctx, v, &errs) }()
		go func() {
			defer vwg.Done()
			// Spread the voters' first votes over one pause.
			if !sleep(ctx, time.Duration(rand.Int64N(int64(cfg.VoteEvery)))) {
				return
			}
			order := rand.Perm(cfg.Polls)
			for k, p := range order {
				frame := fmt.Appendf(nil, `{"t":"vote","poll":%q,"choice":%d,"id":"%d-%d"}`, ids[p], choices[i][p], i, p)
				lat.sent(p, time.Now())
				if err := v.ws.Write(ctx, websocket.MessageText, frame); err != nil {
					errs.Add(1)
					return
				}
				sent.Add(1)
				if k < len(order)-1 && !sleep(ctx, cfg.VoteEvery) {
					return
				}
			}
		}()
	}
	total := int64(cfg.Voters * cfg.Polls)
	var acks int64
	lastLog := time.Now()
	for {
		acks = 0
		for _, v := range voters {
			acks += v.acks.Load()
		}
		if acks >= total || ctx.Err() != nil || time.Since(voteStart) > 120*time.Second {
			break
		}
		if time.Since(lastLog) > 2*time.Second {
			cfg.Log("%d votes sent, %d acked after %.1f s", sent.Load(), acks, time.Since(voteStart).Seconds())
			lastLog = time.Now()
		}
		time.Sleep(20 * time.Millisecond)
	}
	rep.VoteSeconds = time.Since(voteStart).Seconds()
	rep.VotesSent, rep.Acks, rep.Errors = sent.Load(), acks, errs.Load()
	rep.VotesPerSecond = float64(acks) / rep.VoteSeconds

	// Results: the API's tallies against what was sent.
	time.Sleep(300 * time.Millisecond)
	rep.TalliesExact = true
	for p, id := range ids {
		var res struct {
			Counts []int64 `json:"counts"`
		}
		if err := apiCall(context.Background(), cfg, "GET", "/api/v1/polls/"+id+"/results", nil, &res); err != nil {
			return nil, err
		}
		if !slices.Equal(res.Counts, want[p]) {
			rep.TalliesExact = false
			rep.TallyMismatches = append(rep.TallyMismatches, fmt.Sprintf("%s: got %v, sent %v", id, res.Counts, want[p]))
		}
	}
	cancel()
	for _, v := range voters {
		v.ws.CloseNow()
	}
	vwg.Wait()
	sseWG.Wait()
	rep.LatencyP50MS, rep.LatencyP99MS, rep.LatencySamples = lat.percentiles()
	return rep, nil
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func dialVoter(ctx context.Context, url, source, stream string) (*voter, error) {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}, Timeout: 10 * time.Second}
	hc := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(dctx, url, &websocket.DialOptions{HTTPClient: hc, HTTPHeader: http.Header{"User-Agent": {"backchannel-votebench/1"}}})
	if err != nil {
		return nil, err
	}
	ws.SetReadLimit(1 << 20)
	if err := ws.Write(dctx, websocket.MessageText, []byte(`{"t":"hello","player":"votebench"}`)); err != nil {
		ws.CloseNow()
		return nil, err
	}
	if err := ws.Write(dctx, websocket.MessageText, []byte(`{"t":"watch","stream":"`+stream+`"}`)); err != nil {
		ws.CloseNow()
		return nil, err
	}
	// Wait for the endpoint: the link is in the stream's group from then on.
	for {
		_, data, err := ws.Read(dctx)
		if err != nil {
			ws.CloseNow()
			return nil, err
		}
		if bytes.Contains(data, []byte(`"t":"endpoint"`)) {
			return &voter{ws: ws}, nil
		}
	}
}

var ackPrefix = []byte(`{"t":"ack"`)

func readAcks(ctx context.Context, v *voter, errs *atomic.Int64) {
	for {
		_, data, err := v.ws.Read(ctx)
		if err != nil {
			return
		}
		switch {
		case bytes.HasPrefix(data, ackPrefix):
			v.acks.Add(1)
		case bytes.Contains(data, []byte(`"t":"error"`)):
			errs.Add(1)
		}
	}
}

func apiCall(ctx context.Context, cfg Config, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, cfg.URL+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+cfg.APIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, raw)
	}
	return json.Unmarshal(raw, out)
}

// latency pairs the n-th vote sent for a poll with the first live results
// event whose total reaches n (votes are counted close to the order they
// are sent in; the pairing is exact for FIFO delivery).
type latency struct {
	mu      sync.Mutex
	sends   [][]time.Time
	seen    []int
	samples []float64
}

func newLatency(polls int) *latency {
	return &latency{sends: make([][]time.Time, polls), seen: make([]int, polls)}
}

func (l *latency) sent(p int, at time.Time) {
	l.mu.Lock()
	l.sends[p] = append(l.sends[p], at)
	l.mu.Unlock()
}

func (l *latency) visible(p int, total int, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for ; l.seen[p] < total && l.seen[p] < len(l.sends[p]); l.seen[p]++ {
		l.samples = append(l.samples, float64(at.Sub(l.sends[p][l.seen[p]]).Microseconds())/1000)
	}
}

func (l *latency) percentiles() (p50, p99 float64, n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.samples) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(l.samples)
	slices.Sort(s)
	at := func(q float64) float64 { return s[min(len(s)-1, int(q*float64(len(s))))] }
	return at(0.50), at(0.99), len(s)
}

func follow(ctx context.Context, cfg Config, id string, p int, lat *latency) {
	req, _ := http.NewRequestWithContext(ctx, "GET", cfg.URL+"/api/v1/polls/"+id+"/live", nil)
	req.Header.Set("Authorization", "Bearer "+cfg.APIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		data, ok := bytes.CutPrefix(sc.Bytes(), []byte("data: "))
		if !ok {
			continue
		}
		var ev struct {
			Total int `json:"total"`
		}
		if json.Unmarshal(data, &ev) == nil {
			lat.visible(p, ev.Total, time.Now())
		}
	}
}

// ErrIncomplete is returned by callers that require every vote acked.
var ErrIncomplete = errors.New("votebench: not every vote was acknowledged")
