// Package loadgen is the load generator behind `backchannel loadgen`: it
// opens many control links from several worker processes and loopback
// source addresses, takes each through hello, welcome, watch and endpoint,
// then measures what the connection tier costs — connect rate, server RSS
// per idle link, fan-out delivery latency (from a timestamp inside each
// notice), delivered messages per second and server CPU per delivered
// message — against a raw baseline measured in the same run: a tiny server
// that holds the same links and writes the same pre-framed bytes with plain
// net.Conn.Write calls.
package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Options configure a run. Zero values take the defaults in comments.
type Options struct {
	Target    string // base URL of the server under test (http://127.0.0.1:8080)
	APIKey    string // its operator key, for POST /api/v1/notices
	ServerPID int    // the server's process; 0 finds the one listening on Target's port
	// ExtraPIDs are further processes of the system under test (a
	// cluster's other connection servers, its application server) whose
	// CPU and memory are added to ServerPID's.
	ExtraPIDs []int
	// Connect makes every link ask Target's /connect for its server, as
	// players do, instead of dialling Target's /ws: links spread over a
	// cluster's connection servers.
	Connect   bool
	Links     int           // links to each server (15000)
	Workers   int           // worker processes (enough for ≤ 9000 links to each server per process)
	Rounds    int           // fan-out rounds per server (20)
	Gap       time.Duration // pause between rounds (300 ms)
	Idle      time.Duration // idle time before RSS is sampled (5 s)
	Stream    string        // stream watched; notices go to stream:<name> ("demo")
	TextBytes int           // notice text length (100)
	NoRaw     bool          // skip the raw baseline
	RawShards int           // writer goroutines of the raw baseline (GOMAXPROCS)
	Exe       string        // executable to spawn as workers and raw server (os.Executable)
	Log       io.Writer     // progress lines (stderr)
	// Compete keeps the load generator's processes in the normal
	// scheduling policy. By default they run as SCHED_BATCH
	// (YieldToServer), so that their wake-ups do not preempt the servers
	// they measure; the raw baseline server keeps the normal policy.
	Compete bool
}

// ServerResult is one server's figures.
type ServerResult struct {
	Name           string  `json:"name"`
	PID            int     `json:"pid"`
	ExtraPIDs      []int   `json:"extra_pids,omitempty"`
	Links          int     `json:"links"`
	ConnectErrors  int     `json:"connect_errors"`
	ConnectPerSec  float64 `json:"connect_per_s"`
	RSSBefore      int64   `json:"rss_before_bytes"`
	RSSAfter       int64   `json:"rss_after_bytes"`
	RSSPerLinkKB   float64 `json:"rss_per_link_kb"`
	IdleCPUPercent float64 `json:"idle_cpu_percent"`
	Threads        int     `json:"threads"`
	Delivered      int     `json:"delivered"`
	Expected       int     `json:"expected"`
	Latency        Dist    `json:"latency"`
	RoundP99Median float64 `json:"round_p99_median_ms"`
	MsgsPerSec     float64 `json:"delivered_per_s"`
	CPUPerMsgUS    float64 `json:"cpu_per_msg_us"`
	PerRound       []Round `json:"rounds"`
}

// Round is one fan-out round of one server.
type Round struct {
	Latency Dist    `json:"latency"`
	CPUMS   float64 `json:"cpu_ms"` // server CPU during the round, idle rate subtracted
}

// Result is a run's outcome.
type Result struct {
	Server      ServerResult  `json:"server"`
	Raw         *ServerResult `json:"raw,omitempty"`
	CPURatio    float64       `json:"cpu_ratio,omitempty"`
	P99Ratio    float64       `json:"p99_ratio,omitempty"`
	P50Ratio    float64       `json:"p50_ratio,omitempty"`
	Goroutines  float64       `json:"server_goroutines,omitempty"`
	Workers     int           `json:"workers"`
	Rounds      int           `json:"rounds"`
	NoticeBytes int           `json:"notice_text_bytes"`
	FileLimit   uint64        `json:"file_limit"`
	// DriverYields says the coordinator and its workers ran as
	// SCHED_BATCH (Options.Compete unset).
	DriverYields bool `json:"driver_yields"`
	// PerConnection counts links per connection server in -connect runs.
	PerConnection map[string]int `json:"per_connection,omitempty"`
	StartedAtUTC  time.Time      `json:"started_at"`
}

func (o *Options) defaults() error {
	if o.Target == "" {
		o.Target = "http://127.0.0.1:8080"
	}
	if o.Links <= 0 {
		o.Links = 15000
	}
	if o.Workers <= 0 {
		o.Workers = max(2, (o.Links+8999)/9000)
	}
	if o.Rounds <= 0 {
		o.Rounds = 20
	}
	if o.Gap <= 0 {
		o.Gap = 300 * time.Millisecond
	}
	if o.Idle <= 0 {
		o.Idle = 5 * time.Second
	}
	if o.Stream == "" {
		o.Stream = "demo"
	}
	if o.TextBytes <= 0 {
		o.TextBytes = 100
	}
	if o.Log == nil {
		o.Log = os.Stderr
	}
	if o.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		o.Exe = exe
	}
	return nil
}

// worker is a spawned worker process.
type worker struct {
	cmd     *exec.Cmd
	in      io.WriteCloser
	replies chan reply
	links   map[string]int
}

func (w *worker) send(c command) error {
	b, _ := json.Marshal(c)
	_, err := w.in.Write(append(b, '\n'))
	return err
}

func (w *worker) await(op string, timeout time.Duration) (reply, error) {
	select {
	case r, ok := <-w.replies:
		if !ok {
			return reply{}, errors.New("worker exited")
		}
		if r.Op != op {
			return r, fmt.Errorf("worker answered %s (%s), want %s", r.Op, r.FirstError, op)
		}
		return r, nil
	case <-time.After(timeout):
		return reply{}, fmt.Errorf("worker did not answer %s within %v", op, timeout)
	}
}

// Run performs a whole measurement.
func Run(ctx context.Context, o Options) (*Result, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	res := &Result{Workers: o.Workers, Rounds: o.Rounds, NoticeBytes: o.TextBytes, FileLimit: raiseFileLimit(), StartedAtUTC: time.Now().UTC()}
	logf := func(format string, args ...any) { fmt.Fprintf(o.Log, "loadgen: "+format+"\n", args...) }
	base, err := url.Parse(o.Target)
	if err != nil || base.Host == "" {
		return nil, fmt.Errorf("loadgen: bad target %q", o.Target)
	}
	if o.ServerPID == 0 {
		port, _ := strconv.Atoi(base.Port())
		if o.ServerPID, err = ListenerPID(port); err != nil {
			return nil, fmt.Errorf("%w (pass -server-pid)", err)
		}
	}
	wsURL := "ws://" + base.Host + "/ws"
	servers := []*ServerResult{{Name: "backchannel", PID: o.ServerPID, ExtraPIDs: o.ExtraPIDs}}
	if o.Connect {
		wsURL = o.Target + "/connect"
	}
	var raw *exec.Cmd
	var rawAddr string
	if !o.NoRaw {
		raw, rawAddr, err = startRaw(o)
		if err != nil {
			return nil, err
		}
		defer func() { raw.Process.Kill(); raw.Wait() }()
		servers = append(servers, &ServerResult{Name: "raw", PID: raw.Process.Pid})
		res.Raw = servers[1]
	}
	res.Server = *servers[0]
	bc := servers[0]
	defer func() { res.Server = *bc }()

	// After the raw server started, which must not inherit it, and before
	// the workers, which must.
	if res.DriverYields, err = YieldToServerAt(o.ServerPID, o.Compete); err != nil {
		return nil, err
	}
	workers, err := startWorkers(o)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, w := range workers {
			w.in.Close()
		}
		for _, w := range workers {
			done := make(chan struct{})
			go func() { w.cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				w.cmd.Process.Kill()
				<-done
			}
		}
	}()

	for _, s := range servers {
		p, err := s.sample()
		if err != nil {
			return nil, err
		}
		s.RSSBefore = p.RSSBytes
	}
	// Connect, one server after the other.
	urls := map[string]string{"backchannel": wsURL}
	if raw != nil {
		urls["raw"] = "ws://" + rawAddr + "/ws"
	}
	for si, s := range servers {
		start := time.Now()
		for i, w := range workers {
			n := o.Links / len(workers)
			if i < o.Links%len(workers) {
				n++
			}
			src := fmt.Sprintf("127.0.%d.%d", si, 2+i)
			if err := w.send(command{Op: "connect", Target: s.Name, URL: urls[s.Name], N: n, Src: src, Stream: o.Stream}); err != nil {
				return nil, err
			}
		}
		for _, w := range workers {
			r, err := w.await("connected", 10*time.Minute)
			if err != nil {
				return nil, err
			}
			w.links[s.Name] = r.OK
			s.Links += r.OK
			s.ConnectErrors += r.Errors
			if r.FirstError != "" {
				logf("%s: %d links failed, first: %s", s.Name, r.Errors, r.FirstError)
			}
		}
		el := time.Since(start)
		s.ConnectPerSec = float64(s.Links) / el.Seconds()
		logf("%s: %d links in %v (%.0f/s)", s.Name, s.Links, el.Round(time.Millisecond), s.ConnectPerSec)
	}
	// Idle, then RSS and the idle CPU rate (the demo broadcast and timers
	// run in the server under test; subtracted from the rounds' CPU).
	idle0 := map[string]ProcSample{}
	for _, s := range servers {
		idle0[s.Name], _ = s.sample()
	}
	t0 := time.Now()
	select {
	case <-time.After(o.Idle):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	idleRate := map[string]float64{}
	for _, s := range servers {
		p, err := s.sample()
		if err != nil {
			return nil, err
		}
		s.RSSAfter, s.Threads = p.RSSBytes, p.Threads
		if s.Links > 0 {
			s.RSSPerLinkKB = float64(s.RSSAfter-s.RSSBefore) / float64(s.Links) / 1024
		}
		idleRate[s.Name] = (p.CPUSeconds - idle0[s.Name].CPUSeconds) / time.Since(t0).Seconds()
		s.IdleCPUPercent = idleRate[s.Name] * 100
		logf("%s: RSS %d MB -> %d MB after %v idle: %.2f KB per link; idle CPU %.1f%%", s.Name, s.RSSBefore>>20, s.RSSAfter>>20, o.Idle, s.RSSPerLinkKB, s.IdleCPUPercent)
	}
	res.Goroutines = scrapeGauge(o.Target+"/metrics", "go_goroutines")
	if o.Connect {
		res.PerConnection = connectionSpread(o)
		logf("links per connection server (the application's conn:* groups): %v", res.PerConnection)
	}

	// Fan-out rounds, alternating servers so that noise from other work on
	// the machine hits both alike.
	text := strings.Repeat("x", o.TextBytes)
	lat := map[string][]float64{}
	cpu := map[string]float64{}
	span := map[string]float64{}
	roundP99 := map[string][]float64{}
	client := &http.Client{Timeout: 30 * time.Second}
	for r := 0; r < o.Rounds; r++ {
		order := servers
		if r%2 == 1 && len(servers) == 2 {
			order = []*ServerResult{servers[1], servers[0]}
		}
		for _, s := range order {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			for _, w := range workers {
				if err := w.send(command{Op: "expect", Target: s.Name, N: w.links[s.Name], Timeout: 20000}); err != nil {
					return nil, err
				}
			}
			for _, w := range workers {
				if _, err := w.await("armed", 10*time.Second); err != nil {
					return nil, err
				}
			}
			p0, _ := s.sample()
			start := time.Now()
			if err := trigger(client, o, s.Name, rawAddr, text); err != nil {
				return nil, err
			}
			var rl []float64
			for _, w := range workers {
				rp, err := w.await("delivered", 30*time.Second)
				if err != nil {
					return nil, err
				}
				rl = append(rl, rp.Latencies...)
			}
			el := time.Since(start).Seconds()
			p1, _ := s.sample()
			rc := max(0, p1.CPUSeconds-p0.CPUSeconds-idleRate[s.Name]*el)
			cpu[s.Name] += rc
			s.Delivered += len(rl)
			s.Expected += s.Links
			d := Summarize(cloneFloats(rl))
			s.PerRound = append(s.PerRound, Round{Latency: d, CPUMS: rc * 1000})
			roundP99[s.Name] = append(roundP99[s.Name], d.P99)
			span[s.Name] += d.Max / 1000
			lat[s.Name] = append(lat[s.Name], rl...)
			time.Sleep(o.Gap)
		}
		logf("round %d/%d done", r+1, o.Rounds)
	}
	for _, s := range servers {
		s.Latency = Summarize(lat[s.Name])
		s.RoundP99Median = median(roundP99[s.Name])
		if span[s.Name] > 0 {
			s.MsgsPerSec = float64(s.Delivered) / span[s.Name]
		}
		if s.Delivered > 0 {
			s.CPUPerMsgUS = cpu[s.Name] / float64(s.Delivered) * 1e6
		}
	}
	if res.Raw != nil {
		if res.Raw.CPUPerMsgUS > 0 {
			res.CPURatio = bc.CPUPerMsgUS / res.Raw.CPUPerMsgUS
		}
		if res.Raw.Latency.P99 > 0 {
			res.P99Ratio = bc.Latency.P99 / res.Raw.Latency.P99
			res.P50Ratio = bc.Latency.P50 / res.Raw.Latency.P50
		}
	}
	for _, w := range workers {
		for _, s := range servers {
			_ = w.send(command{Op: "close", Target: s.Name})
			_, _ = w.await("closed", time.Minute)
		}
	}
	return res, nil
}

func cloneFloats(x []float64) []float64 { return append([]float64(nil), x...) }

func trigger(c *http.Client, o Options, name, rawAddr, text string) error {
	body, _ := json.Marshal(map[string]string{"group": "stream:" + o.Stream, "message": text})
	var req *http.Request
	if name == "raw" {
		req, _ = http.NewRequest("POST", "http://"+rawAddr+"/trigger", bytes.NewReader(body))
	} else {
		req, _ = http.NewRequest("POST", strings.TrimSuffix(o.Target, "/")+"/api/v1/notices", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+o.APIKey)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("loadgen: %s trigger answered %s: %s", name, resp.Status, b)
	}
	return nil
}

func startRaw(o Options) (*exec.Cmd, string, error) {
	args := []string{"loadgen", "raw-server", "-addr", "127.0.0.1:0"}
	if o.RawShards > 0 {
		args = append(args, "-shards", strconv.Itoa(o.RawShards))
	}
	cmd := exec.Command(o.Exe, args...)
	cmd.Stderr = o.Log
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening ")
	if err != nil || !ok {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, "", fmt.Errorf("loadgen: raw server did not start: %q %v", line, err)
	}
	return cmd, addr, nil
}

func startWorkers(o Options) ([]*worker, error) {
	var ws []*worker
	for range o.Workers {
		cmd := exec.Command(o.Exe, "loadgen", "worker")
		cmd.Stderr = o.Log
		in, err := cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		w := &worker{cmd: cmd, in: in, replies: make(chan reply, 16), links: map[string]int{}}
		go func() {
			defer close(w.replies)
			dec := json.NewDecoder(out)
			for {
				var r reply
				if err := dec.Decode(&r); err != nil {
					return
				}
				w.replies <- r
			}
		}()
		ws = append(ws, w)
	}
	return ws, nil
}

// scrapeGauge reads one unlabelled-or-labelled gauge from a Prometheus
// text endpoint; 0 when absent.
func scrapeGauge(u, name string) float64 {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(u)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, name+" ") || strings.HasPrefix(line, name+"{") {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			return v
		}
	}
	return 0
}

// ServeRaw runs the raw baseline server until ctx ends, printing
// "listening <addr>" first.
func ServeRaw(ctx context.Context, addr string, shards int, out io.Writer) error {
	raiseFileLimit()
	s, err := ListenRaw(addr, shards)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "listening %s\n", s.Addr())
	<-ctx.Done()
	return s.Close()
}

// Print writes a human-readable report.
func (r *Result) Print(w io.Writer) {
	row := func(name string, f func(s *ServerResult) string) {
		fmt.Fprintf(w, "  %-34s %-22s", name, f(&r.Server))
		if r.Raw != nil {
			fmt.Fprintf(w, " %s", f(r.Raw))
		}
		fmt.Fprintln(w)
	}
	policy := "SCHED_BATCH"
	if !r.DriverYields {
		policy = "normal"
	}
	fmt.Fprintf(w, "\nbackchannel loadgen: %d workers (%s scheduling), %d rounds, %d-byte notice text, open-files limit %d\n\n", r.Workers, policy, r.Rounds, r.NoticeBytes, r.FileLimit)
	row("", func(s *ServerResult) string { return s.Name })
	row("links (connect errors)", func(s *ServerResult) string { return fmt.Sprintf("%d (%d)", s.Links, s.ConnectErrors) })
	row("connect rate (hello..endpoint)", func(s *ServerResult) string { return fmt.Sprintf("%.0f links/s", s.ConnectPerSec) })
	row("RSS before -> after idle", func(s *ServerResult) string {
		return fmt.Sprintf("%d -> %d MB", s.RSSBefore>>20, s.RSSAfter>>20)
	})
	row("RSS per idle link", func(s *ServerResult) string { return fmt.Sprintf("%.2f KB", s.RSSPerLinkKB) })
	row("threads; idle CPU", func(s *ServerResult) string { return fmt.Sprintf("%d; %.1f%%", s.Threads, s.IdleCPUPercent) })
	row("delivered / expected", func(s *ServerResult) string { return fmt.Sprintf("%d / %d", s.Delivered, s.Expected) })
	row("latency p50 / p99 / max", func(s *ServerResult) string {
		return fmt.Sprintf("%.1f / %.1f / %.1f ms", s.Latency.P50, s.Latency.P99, s.Latency.Max)
	})
	row("median of per-round p99", func(s *ServerResult) string { return fmt.Sprintf("%.1f ms", s.RoundP99Median) })
	row("delivered per second", func(s *ServerResult) string { return fmt.Sprintf("%.0f msg/s", s.MsgsPerSec) })
	row("server CPU per delivered message", func(s *ServerResult) string { return fmt.Sprintf("%.2f µs", s.CPUPerMsgUS) })
	if r.Goroutines > 0 {
		fmt.Fprintf(w, "  %-34s %.0f\n", "server goroutines (go_goroutines)", r.Goroutines)
	}
	if r.Raw != nil {
		fmt.Fprintf(w, "\n  ratios to the raw baseline: CPU per message %.2f×, p99 latency %.2f×, p50 latency %.2f×\n", r.CPURatio, r.P99Ratio, r.P50Ratio)
	}
}

// sample reads the server's processes, summed.
func (s *ServerResult) sample() (ProcSample, error) {
	sum, err := SampleProc(s.PID)
	if err != nil {
		return sum, err
	}
	for _, pid := range s.ExtraPIDs {
		p, err := SampleProc(pid)
		if err != nil {
			return sum, err
		}
		sum.RSSBytes += p.RSSBytes
		sum.CPUSeconds += p.CPUSeconds
		sum.Threads += p.Threads
	}
	return sum, nil
}

// connectionSpread reads how many links each connection server holds from
// the application tier's automatic conn:<id> groups.
func connectionSpread(o Options) map[string]int {
	req, err := http.NewRequest(http.MethodGet, o.Target+"/api/v1/groups", nil)
	if err != nil {
		return nil
	}
	req.Header.Set("Authorization", "Bearer "+o.APIKey)
	res, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return nil
	}
	defer res.Body.Close()
	var body struct {
		Groups []struct {
			ID      string `json:"id"`
			Members int    `json:"members"`
		} `json:"groups"`
	}
	if json.NewDecoder(res.Body).Decode(&body) != nil {
		return nil
	}
	out := map[string]int{}
	for _, g := range body.Groups {
		if id, ok := strings.CutPrefix(g.ID, "conn:"); ok {
			out[id] = g.Members
		}
	}
	return out
}
