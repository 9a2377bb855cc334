// Package votebench drives the vote path end to end for the benchmark. The
// coordinator (Run) creates polls through the REST API, measures each poll's
// delivery to every link, follows every poll's live results stream as a
// broadcaster would, and checks at the end that the tallies the API reports
// equal what was sent. The voters live in worker processes of their own
// (RunWorker), each holding its share of the links as bare non-blocking
// sockets read by one epoll goroutine: every voter has its own link and
// anonymous identity, dialled from several loopback source addresses, and
// every vote is its own frame and its own write on its voter's link.
package votebench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/backchannel/backchannel/internal/loadgen"
)

// Config of one run. Zero values take the defaults in comments.
type Config struct {
	URL       string        // base URL of the node (http://127.0.0.1:8080)
	APIKey    string        // operator or broadcaster key
	Stream    string        // stream the polls are for ("bench")
	Polls     int           // concurrent polls (10)
	Voters    int           // voters, each on its own link and identity (15000)
	Choices   int           // choices per poll (4)
	VoteEvery time.Duration // pause between one voter's votes (60 ms; under the 20 frames/s per-link limit)
	Sources   []string      // local addresses to dial from (127.0.0.1..4)
	// Workers is the number of worker processes holding the links (Exe
	// run as `votebench worker`); 0 runs one worker inside this process.
	Workers   int
	Exe       string        // executable for worker processes (os.Executable)
	Dialers   int           // links each worker opens in parallel (32)
	ServerPID int           // process whose CPU is reported as the server's (0: the one listening on URL's port, if found)
	AckWait   time.Duration // how long to wait for acks after the last vote (60 s)
	// Compete keeps the driver's threads in the normal scheduling policy.
	// By default a driver measuring a server in another process yields to
	// it (loadgen.YieldToServer): its wake-ups do not preempt the server.
	Compete bool
	Seed    uint64 // choices, orders and phases derive from it (random)
	Log     func(format string, args ...any)
}

// Dist summarizes latencies in ms.
type Dist struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50_ms"`
	P90 float64 `json:"p90_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

// Report is what a run measured.
type Report struct {
	Voters         int     `json:"voters"`
	Polls          int     `json:"polls"`
	Workers        int     `json:"workers"`
	DriverYields   bool    `json:"driver_yields"` // the driver ran as SCHED_BATCH (Config.Compete unset)
	ConnectSeconds float64 `json:"connect_s"`
	ConnectErrors  int     `json:"connect_errors"`

	// Poll delivery: each poll is one round, created through the API while
	// every link waits for it; latency is POST → the poll frame read by
	// the link.
	PollDelivery       Dist    `json:"poll_delivery"`
	PollRoundP99Median float64 `json:"poll_round_p99_median_ms"`

	VotesSent      int64   `json:"votes_sent"`
	Acks           int64   `json:"acks"`
	Errors         int64   `json:"errors"` // refusals and links lost
	DupAcks        int64   `json:"dup_acks"`
	LinksLost      int64   `json:"links_lost"`
	SendSeconds    float64 `json:"send_s"` // first vote sent → last vote sent
	VoteSeconds    float64 `json:"vote_s"` // first vote sent → last ack received
	VotesPerSecond float64 `json:"votes_per_s"`
	Ack            Dist    `json:"ack"` // vote sent → its ack read
	// Vote sent → visible in the broadcaster's live results (the n-th vote
	// sent for a poll is paired with the first live event whose total
	// reaches n).
	Latency        Dist    `json:"live_results"`
	LatencyP50MS   float64 `json:"-"`
	LatencyP99MS   float64 `json:"-"`
	LatencySamples int     `json:"-"`
	// The same by the second of the vote phase in which the vote was sent:
	// a latency that grows from second to second is a queue building up.
	LatencyBySecond []Dist `json:"live_results_by_second"`
	LiveEvents      int    `json:"live_events"`
	// Server stamp of a live event (its "at", ms) → the broadcaster's
	// reader has it: the part of Latency spent after the server wrote the
	// event, on the observer's side of the machine.
	LiveReadLag   Dist    `json:"live_read_lag"`
	ResultsFrames int64   `json:"audience_results_frames"` // results frames the links read during the vote
	FramesPerRead float64 `json:"frames_per_read"`         // server frames per socket read on the driver's side

	ServerCPUSeconds   float64 `json:"server_cpu_s,omitempty"` // during the vote phase
	ServerCPUPerVoteUS float64 `json:"server_cpu_per_vote_us,omitempty"`
	DriverCPUSeconds   float64 `json:"driver_cpu_s"`
	DriverCPUPerVoteUS float64 `json:"driver_cpu_per_vote_us"`
	LoadAverage        string  `json:"load_average"`

	TalliesExact    bool     `json:"tallies_exact"`
	TallyMismatches []string `json:"tally_mismatches,omitempty"`
	FirstError      string   `json:"first_error,omitempty"`
}

func (c *Config) defaults() error {
	if c.Stream == "" {
		c.Stream = "bench"
	}
	if c.Polls <= 0 {
		c.Polls = 10
	}
	if c.Polls > 1000 {
		return errors.New("votebench: at most 1000 polls")
	}
	if c.Voters <= 0 {
		c.Voters = 15000
	}
	if c.Choices < 2 {
		c.Choices = 4
	}
	if c.Choices > 10 {
		return errors.New("votebench: at most 10 choices")
	}
	if c.VoteEvery <= 0 {
		c.VoteEvery = 60 * time.Millisecond
	}
	if len(c.Sources) == 0 {
		c.Sources = []string{"127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"}
	}
	if c.Dialers <= 0 {
		c.Dialers = 32
	}
	if c.AckWait <= 0 {
		c.AckWait = 60 * time.Second
	}
	if c.Seed == 0 {
		c.Seed = rand.Uint64() | 1
	}
	if c.Log == nil {
		c.Log = func(string, ...any) {}
	}
	if c.Workers > 0 && c.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		c.Exe = exe
	}
	return nil
}

// workerConn is the coordinator's end of one worker.
type workerConn struct {
	pid     int // 0 for the in-process worker
	in      io.WriteCloser
	replies chan reply
	first   int
	n       int
	wait    func()
}

func (w *workerConn) send(c command) error {
	b, _ := json.Marshal(c)
	_, err := w.in.Write(append(b, '\n'))
	return err
}

func (w *workerConn) await(op string, timeout time.Duration) (reply, error) {
	select {
	case r, ok := <-w.replies:
		if !ok {
			return reply{}, errors.New("votebench: worker exited")
		}
		if r.Op != op {
			return r, fmt.Errorf("votebench: worker answered %s (%s), want %s", r.Op, r.FirstError, op)
		}
		return r, nil
	case <-time.After(timeout):
		return reply{}, fmt.Errorf("votebench: worker did not answer %s within %v", op, timeout)
	}
}

func readReplies(r io.Reader, ch chan<- reply) {
	defer close(ch)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		var rep reply
		if json.Unmarshal(sc.Bytes(), &rep) == nil {
			ch <- rep
		}
	}
}

func startWorkers(cfg Config) ([]*workerConn, error) {
	n := max(1, cfg.Workers)
	var ws []*workerConn
	first := 0
	for i := range n {
		count := cfg.Voters / n
		if i < cfg.Voters%n {
			count++
		}
		w := &workerConn{first: first, n: count, replies: make(chan reply, 4)}
		first += count
		if cfg.Workers == 0 {
			cmdR, cmdW := io.Pipe()
			repR, repW := io.Pipe()
			done := make(chan struct{})
			go func() {
				defer close(done)
				_ = RunWorker(cmdR, repW)
				repW.Close()
			}()
			w.in = cmdW
			w.wait = func() { <-done }
			go readReplies(repR, w.replies)
		} else {
			cmd := exec.Command(cfg.Exe, "votebench", "worker")
			cmd.Stderr = os.Stderr
			in, err := cmd.StdinPipe()
			if err != nil {
				return ws, err
			}
			out, err := cmd.StdoutPipe()
			if err != nil {
				return ws, err
			}
			if err := cmd.Start(); err != nil {
				return ws, err
			}
			w.pid, w.in = cmd.Process.Pid, in
			w.wait = func() {
				done := make(chan struct{})
				go func() { cmd.Wait(); close(done) }()
				select {
				case <-done:
				case <-time.After(10 * time.Second):
					cmd.Process.Kill()
					<-done
				}
			}
			go readReplies(out, w.replies)
		}
		ws = append(ws, w)
	}
	return ws, nil
}

// Run performs one benchmark run.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	raiseFileLimit()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rep := &Report{Voters: cfg.Voters, Polls: cfg.Polls, Workers: cfg.Workers}
	if cfg.ServerPID == 0 {
		if u, err := url.Parse(cfg.URL); err == nil {
			if port, err := strconv.Atoi(u.Port()); err == nil {
				cfg.ServerPID, _ = loadgen.ListenerPID(port)
			}
		}
	}
	if cfg.ServerPID == os.Getpid() {
		cfg.ServerPID = 0 // an in-process server: its CPU is not separable from the driver's
	}
	// Before the workers start, so that they inherit it.
	var err error
	if rep.DriverYields, err = loadgen.YieldToServerAt(cfg.ServerPID, cfg.Compete); err != nil {
		return nil, err
	}
	workers, err := startWorkers(cfg)
	defer func() {
		for _, w := range workers {
			w.in.Close()
		}
		for _, w := range workers {
			w.wait()
		}
	}()
	if err != nil {
		return nil, err
	}

	// Links first: every voter its own link and identity.
	start := time.Now()
	wsURL := "ws" + strings.TrimPrefix(cfg.URL, "http") + "/ws"
	for _, w := range workers {
		if err := w.send(command{Op: "connect", URL: wsURL, First: w.first, N: w.n, Sources: cfg.Sources, Stream: cfg.Stream, Dialers: cfg.Dialers}); err != nil {
			return nil, err
		}
	}
	for _, w := range workers {
		r, err := w.await("connected", 15*time.Minute)
		if err != nil {
			return nil, err
		}
		rep.ConnectErrors += r.Errors
		if r.FirstError != "" && rep.FirstError == "" {
			rep.FirstError = r.FirstError
		}
	}
	rep.ConnectSeconds = time.Since(start).Seconds()
	cfg.Log("%d links open in %.1f s (%d failed)", cfg.Voters-rep.ConnectErrors, rep.ConnectSeconds, rep.ConnectErrors)
	if rep.ConnectErrors > 0 {
		return rep, fmt.Errorf("votebench: %d links failed to open: %s", rep.ConnectErrors, rep.FirstError)
	}

	// Polls, one round each: every link waits for the poll frame.
	ids := make([]string, cfg.Polls)
	var delivery []float64
	var roundP99 []float64
	choices := make([]string, cfg.Choices)
	for j := range choices {
		choices[j] = fmt.Sprintf("choice %d", j)
	}
	for i := range ids {
		for _, w := range workers {
			if err := w.send(command{Op: "expect", K: i + 1, WaitNS: int64(30 * time.Second)}); err != nil {
				return nil, err
			}
		}
		for _, w := range workers {
			if _, err := w.await("armed", 10*time.Second); err != nil {
				return nil, err
			}
		}
		t0 := time.Now().UnixMicro()
		var out struct{ ID string }
		if err := apiCall(ctx, cfg, "POST", "/api/v1/polls", map[string]any{"stream": cfg.Stream, "question": fmt.Sprintf("bench poll %d", i), "choices": choices}, &out); err != nil {
			return nil, fmt.Errorf("creating poll %d: %w", i, err)
		}
		ids[i] = out.ID
		var round []float64
		for _, w := range workers {
			r, err := w.await("delivered", time.Minute)
			if err != nil {
				return nil, err
			}
			for _, t := range r.Times {
				round = append(round, float64(t-t0)/1000)
			}
		}
		if len(round) < cfg.Voters {
			return nil, fmt.Errorf("votebench: poll %d reached %d of %d links", i, len(round), cfg.Voters)
		}
		roundP99 = append(roundP99, summarize(slices.Clone(round)).P99)
		delivery = append(delivery, round...)
	}
	rep.PollDelivery = summarize(delivery)
	rep.PollRoundP99Median = median(roundP99)
	cfg.Log("%d polls delivered to every link: p50 %.0f ms, p99 %.0f ms", cfg.Polls, rep.PollDelivery.P50, rep.PollDelivery.P99)

	// Live results streams: one per poll, as the broadcaster follows them.
	live := make([]*liveStream, cfg.Polls)
	var sseWG sync.WaitGroup
	sseCtx, sseCancel := context.WithCancel(ctx)
	defer sseCancel()
	for i, id := range ids {
		live[i] = &liveStream{}
		ready := make(chan struct{})
		sseWG.Add(1)
		go func() { defer sseWG.Done(); live[i].follow(sseCtx, cfg, id, ready) }()
		select {
		case <-ready:
		case <-time.After(10 * time.Second):
			return nil, fmt.Errorf("votebench: live results of poll %s did not start", id)
		}
	}

	// The vote phase.
	dir, err := os.MkdirTemp("", "votebench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	startAt := time.Now().Add(300 * time.Millisecond)
	for _, w := range workers {
		if err := w.send(command{Op: "vote", Polls: ids, Choices: cfg.Choices, EveryNS: int64(cfg.VoteEvery), StartNS: startAt.UnixNano(),
			Seed: cfg.Seed, WaitNS: int64(cfg.AckWait), Dir: dir}); err != nil {
			return nil, err
		}
	}
	time.Sleep(time.Until(startAt))
	cpu0 := sampleCPU(cfg.ServerPID, workers)
	var firstSend, lastSend, lastAck int64
	var reads int64
	var ackFiles, sendFiles []string
	logDone := make(chan struct{})
	go func() {
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-logDone:
				return
			case <-t.C:
				cfg.Log("voting: %.1f s", time.Since(startAt).Seconds())
			}
		}
	}()
	for _, w := range workers {
		r, err := w.await("voted", cfg.AckWait+time.Duration(cfg.Polls)*cfg.VoteEvery+time.Minute)
		if err != nil {
			close(logDone)
			return nil, err
		}
		rep.VotesSent += r.Sent
		rep.Acks += r.Acked
		rep.Errors += r.Refused + r.Lost
		rep.DupAcks += r.DupAcks
		rep.LinksLost += r.Lost
		rep.ResultsFrames += r.Results
		reads += r.Reads
		rep.FramesPerRead += float64(r.Frames)
		if r.FirstError != "" && rep.FirstError == "" {
			rep.FirstError = r.FirstError
		}
		if firstSend == 0 || (r.FirstSend > 0 && r.FirstSend < firstSend) {
			firstSend = r.FirstSend
		}
		lastSend = max(lastSend, r.LastSend)
		lastAck = max(lastAck, r.LastAck)
		ackFiles = append(ackFiles, r.AckFile)
		sendFiles = append(sendFiles, r.SendFile)
	}
	close(logDone)
	cpu1 := sampleCPU(cfg.ServerPID, workers)
	if reads > 0 {
		rep.FramesPerRead /= float64(reads)
	}
	rep.SendSeconds = float64(lastSend-firstSend) / 1e9
	if lastAck > firstSend {
		rep.VoteSeconds = float64(lastAck-firstSend) / 1e9
		rep.VotesPerSecond = float64(rep.Acks) / rep.VoteSeconds
	}
	if cfg.ServerPID != 0 {
		rep.ServerCPUSeconds = cpu1.server - cpu0.server
	}
	rep.DriverCPUSeconds = cpu1.driver - cpu0.driver
	if rep.Acks > 0 {
		rep.ServerCPUPerVoteUS = rep.ServerCPUSeconds / float64(rep.Acks) * 1e6
		rep.DriverCPUPerVoteUS = rep.DriverCPUSeconds / float64(rep.Acks) * 1e6
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		rep.LoadAverage = strings.Join(strings.Fields(string(b))[:3], " ")
	}

	// Acks and sends from the workers' files.
	var ackLat []float64
	for _, f := range ackFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		for i := 0; i+4 <= len(b); i += 4 {
			ackLat = append(ackLat, float64(math.Float32frombits(binary.LittleEndian.Uint32(b[i:]))))
		}
	}
	rep.Ack = summarize(ackLat)
	sends := make([][]int64, cfg.Polls)
	want := make([][]int64, cfg.Polls)
	for i := range want {
		want[i] = make([]int64, cfg.Choices)
	}
	for _, f := range sendFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		for i := 0; i+11 <= len(b); i += 11 {
			p := int(binary.LittleEndian.Uint16(b[i:]))
			c := int(b[i+2])
			if p < cfg.Polls && c < cfg.Choices {
				want[p][c]++
				sends[p] = append(sends[p], int64(binary.LittleEndian.Uint64(b[i+3:])))
			}
		}
	}

	// Results: the API's tallies against what was sent. Every vote was
	// acked (or the run is reported as failed), and an ack means durably
	// counted, so the tallies must already be complete.
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
	// Give the live streams one more interval to show the last votes.
	time.Sleep(500 * time.Millisecond)
	sseCancel()
	sseWG.Wait()
	var samples []liveSample
	var readLag []float64
	for p, l := range live {
		samples = l.pair(sends[p], samples)
		readLag = l.readLag(readLag)
		rep.LiveEvents += len(l.events)
	}
	rep.LiveReadLag = summarize(readLag)
	rep.Latency, rep.LatencyBySecond = summarizeLive(samples, firstSend)
	rep.LatencyP50MS, rep.LatencyP99MS, rep.LatencySamples = rep.Latency.P50, rep.Latency.P99, rep.Latency.N
	return rep, nil
}

type cpuSample struct{ server, driver float64 }

// sampleCPU reads the CPU time used so far by the server and by the
// driver: this process and its workers.
func sampleCPU(serverPID int, workers []*workerConn) cpuSample {
	var s cpuSample
	if serverPID != 0 {
		if p, err := loadgen.SampleProc(serverPID); err == nil {
			s.server = p.CPUSeconds
		}
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s.driver = float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
	}
	for _, w := range workers {
		if w.pid != 0 {
			if p, err := loadgen.SampleProc(w.pid); err == nil {
				s.driver += p.CPUSeconds
			}
		}
	}
	return s
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

// liveStream follows one poll's live results, as the broadcaster's studio
// does, and keeps (arrival time, total) of every event.
type liveStream struct {
	mu     sync.Mutex
	events []liveEvent
}

type liveEvent struct {
	at       int64 // unix ns, read
	serverAt int64 // unix ms, the event's stamp
	total    int64
}

func (l *liveStream) follow(ctx context.Context, cfg Config, id string, ready chan<- struct{}) {
	var once sync.Once
	signal := func() { once.Do(func() { close(ready) }) }
	defer signal()
	req, _ := http.NewRequestWithContext(ctx, "GET", cfg.URL+"/api/v1/polls/"+id+"/live", nil)
	req.Header.Set("Authorization", "Bearer "+cfg.APIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cfg.Log("live results of %s: %v", id, err)
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
			Total int64 `json:"total"`
			At    int64 `json:"at"`
		}
		if json.Unmarshal(data, &ev) == nil {
			l.mu.Lock()
			l.events = append(l.events, liveEvent{at: time.Now().UnixNano(), serverAt: ev.At, total: ev.Total})
			l.mu.Unlock()
			signal()
		}
	}
}

// pair appends, for every vote sent to the poll, the time from its sending
// to the first live event whose total includes it: votes are counted
// nearly in the order they are sent, so the n-th vote sent is paired with
// the first event whose total reaches n.
func (l *liveStream) pair(sends []int64, out []liveSample) []liveSample {
	slices.Sort(sends)
	l.mu.Lock()
	defer l.mu.Unlock()
	seen := 0
	for _, ev := range l.events {
		for ; int64(seen) < ev.total && seen < len(sends); seen++ {
			out = append(out, liveSample{sent: sends[seen], ms: float64(ev.at-sends[seen]) / 1e6})
		}
	}
	return out
}

// readLag appends, for every event with a server stamp, how long after the
// stamp it was read (ms; the clocks are one machine's).
func (l *liveStream) readLag(out []float64) []float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ev := range l.events {
		if ev.serverAt > 0 {
			out = append(out, float64(ev.at-ev.serverAt*int64(time.Millisecond))/1e6)
		}
	}
	return out
}

type liveSample struct {
	sent int64 // unix ns
	ms   float64
}

// summarizeLive is the distribution of all samples and, for each second
// after start, of the votes sent in it.
func summarizeLive(samples []liveSample, start int64) (all Dist, bySecond []Dist) {
	ms := make([]float64, len(samples))
	var seconds [][]float64
	for i, s := range samples {
		ms[i] = s.ms
		sec := max(0, int((s.sent-start)/int64(time.Second)))
		for len(seconds) <= sec {
			seconds = append(seconds, nil)
		}
		seconds[sec] = append(seconds[sec], s.ms)
	}
	for _, v := range seconds {
		bySecond = append(bySecond, summarize(v))
	}
	return summarize(ms), bySecond
}

func summarize(v []float64) Dist {
	if len(v) == 0 {
		return Dist{}
	}
	slices.Sort(v)
	at := func(q float64) float64 { return v[min(len(v)-1, int(q*float64(len(v))))] }
	return Dist{N: len(v), P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: v[len(v)-1]}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// ErrIncomplete is returned by callers that require every vote acked.
var ErrIncomplete = errors.New("votebench: not every vote was acknowledged")
