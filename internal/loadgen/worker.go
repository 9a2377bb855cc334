package loadgen

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// command is what the coordinator asks a worker process to do (one JSON
// object per line on the worker's stdin).
type command struct {
	Op      string `json:"op"` // connect, expect, close
	Target  string `json:"target"`
	URL     string `json:"url,omitempty"`
	N       int    `json:"n,omitempty"`
	Src     string `json:"src,omitempty"`
	Stream  string `json:"stream,omitempty"`
	Timeout int    `json:"timeout_ms,omitempty"`
}

// reply is a worker's answer (one JSON object per line on its stdout).
type reply struct {
	Op         string    `json:"op"` // connected, armed, delivered, closed, error
	Target     string    `json:"target"`
	OK         int       `json:"ok,omitempty"`
	Errors     int       `json:"errors,omitempty"`
	FirstError string    `json:"first_error,omitempty"`
	MS         float64   `json:"ms,omitempty"`
	Latencies  []float64 `json:"lat,omitempty"` // ms, one per delivered notice
}

const helloFrame = `{"t":"hello","ua":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) backchannel-loadgen","lang":"en-US","screen":{"w":1920,"h":1080,"dpr":1},"net":{"type":"ethernet","effective":"4g","downlink":10,"rtt":50},"player":"backchannel-loadgen/1"}`

// target is one set of links a worker holds (to the server under test, or
// to the raw baseline).
type target struct {
	mu      sync.Mutex
	links   []*wsClient
	lat     []float64
	expect  int
	done    chan struct{}
	readers sync.WaitGroup
}

func (t *target) record(ms float64) {
	t.mu.Lock()
	t.lat = append(t.lat, ms)
	if t.done != nil && len(t.lat) >= t.expect {
		close(t.done)
		t.done = nil
	}
	t.mu.Unlock()
}

// RunWorker serves one coordinator over in/out until in ends.
func RunWorker(in io.Reader, out io.Writer) error {
	raiseFileLimit()
	enc := json.NewEncoder(out)
	var encMu sync.Mutex
	send := func(r reply) {
		encMu.Lock()
		defer encMu.Unlock()
		_ = enc.Encode(r)
	}
	targets := map[string]*target{}
	var pending sync.WaitGroup
	defer pending.Wait()
	defer func() {
		for _, t := range targets {
			t.closeAll()
		}
	}()
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var c command
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			send(reply{Op: "error", FirstError: err.Error()})
			continue
		}
		t := targets[c.Target]
		if t == nil {
			t = &target{}
			targets[c.Target] = t
		}
		switch c.Op {
		case "connect":
			send(t.connect(c))
		case "expect":
			t.mu.Lock()
			t.lat = t.lat[:0]
			t.expect = c.N
			done := make(chan struct{})
			t.done = done
			if c.N == 0 {
				close(done)
				t.done = nil
			}
			t.mu.Unlock()
			send(reply{Op: "armed", Target: c.Target})
			pending.Add(1)
			go func() {
				defer pending.Done()
				select {
				case <-done:
				case <-time.After(time.Duration(c.Timeout) * time.Millisecond):
				}
				t.mu.Lock()
				lat := append([]float64(nil), t.lat...)
				t.done = nil
				t.mu.Unlock()
				send(reply{Op: "delivered", Target: c.Target, OK: len(lat), Latencies: lat})
			}()
		case "close":
			t.closeAll()
			send(reply{Op: "closed", Target: c.Target})
		default:
			send(reply{Op: "error", FirstError: "unknown op " + c.Op})
		}
	}
	return sc.Err()
}

func (t *target) connect(c command) reply {
	start := time.Now()
	var src net.IP
	if c.Src != "" {
		src = net.ParseIP(c.Src)
	}
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	jobs := make(chan struct{})
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				l, err := openLink(c.URL, src, c.Stream)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				ok.Add(1)
				t.mu.Lock()
				t.links = append(t.links, l)
				t.mu.Unlock()
				t.readers.Add(1)
				go t.read(l)
			}
		}()
	}
	for range c.N {
		jobs <- struct{}{}
	}
	close(jobs)
	wg.Wait()
	r := reply{Op: "connected", Target: c.Target, OK: int(ok.Load()), Errors: int(failed.Load()), MS: float64(time.Since(start).Microseconds()) / 1000}
	if e, _ := firstErr.Load().(string); e != "" {
		r.FirstError = e
	}
	return r
}

// openLink opens a link and takes it through hello, welcome, watch and
// endpoint, as a player does.
func openLink(url string, src net.IP, stream string) (*wsClient, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if strings.HasPrefix(url, "http") {
		// A /connect URL: ask it for a connection server first.
		var err error
		if url, err = lookupConnect(ctx, url, src); err != nil {
			return nil, fmt.Errorf("/connect: %w", err)
		}
	}
	l, err := dialWS(ctx, url, src, "Mozilla/5.0 (X11; Linux x86_64) backchannel-loadgen")
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*wsClient, error) { l.nc.Close(); return nil, err }
	if err := l.sendText(helloFrame); err != nil {
		return fail(err)
	}
	if _, err := l.expectType("welcome"); err != nil {
		return fail(fmt.Errorf("welcome: %w", err))
	}
	if err := l.sendText(`{"t":"watch","stream":"` + stream + `"}`); err != nil {
		return fail(err)
	}
	if _, err := l.expectType("endpoint"); err != nil {
		return fail(fmt.Errorf("endpoint: %w", err))
	}
	_ = l.nc.SetDeadline(time.Time{})
	return l, nil
}

func (t *target) read(l *wsClient) {
	defer t.readers.Done()
	buf := make([]byte, 512)
	for {
		f, err := l.readFrame(buf)
		if err != nil {
			return
		}
		if cap(f) > cap(buf) && cap(f) <= 4096 {
			buf = f
		}
		if ts, ok := noticeTS(f); ok {
			now := float64(time.Now().UnixMicro()) / 1000
			t.record(now - ts)
		}
	}
}

func (t *target) closeAll() {
	t.mu.Lock()
	links := t.links
	t.links = nil
	t.mu.Unlock()
	for _, l := range links {
		l.nc.Close()
	}
	t.readers.Wait()
}

// lookupConnect asks a /connect endpoint which connection server to use,
// from the link's own source address.
func lookupConnect(ctx context.Context, connectURL string, src net.IP) (string, error) {
	client := connectClient(src)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, connectURL, nil)
	if err != nil {
		return "", err
	}
	res, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d", res.StatusCode)
	}
	var body struct {
		URL string `json:"url"`
	}
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		return "", err
	}
	if body.URL == "" {
		return "", errors.New("no url in the answer")
	}
	return body.URL, nil
}

var (
	connectClientsMu sync.Mutex
	connectClients   = map[string]*http.Client{}
)

// connectClient returns an HTTP client dialling from src, one per source
// address, keeping a few connections alive for the many lookups.
func connectClient(src net.IP) *http.Client {
	if src == nil {
		return http.DefaultClient
	}
	connectClientsMu.Lock()
	defer connectClientsMu.Unlock()
	c := connectClients[src.String()]
	if c == nil {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: src}}
		c = &http.Client{Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 64}}
		connectClients[src.String()] = c
	}
	return c
}
