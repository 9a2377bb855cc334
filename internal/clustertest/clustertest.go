// Package clustertest runs a real Backchannel cluster on loopback for tests:
// a redis-server and `backchannel <role>` processes built from this source
// tree, each with its own HTTP, ICE and gossip ports, joined by memberlist.
// Processes can be stopped gracefully or SIGKILLed mid-test; their logs are
// printed when the test fails.
package clustertest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/backchannel/backchannel/internal/redistest"
)

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// Binary builds cmd/backchannel once per test process and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "backchannel-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "backchannel")
		cmd := exec.Command("go", "build", "-o", buildPath, "./cmd/backchannel")
		cmd.Dir = moduleRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

func moduleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Cluster is a redis-server and the processes started on it.
type Cluster struct {
	t     testing.TB
	bin   string
	Redis *redistest.Server

	mu    sync.Mutex
	procs []*Proc
	seed  string // gossip address of the first node
}

// New starts a redis-server; processes come with Start.
func New(t testing.TB) *Cluster {
	t.Helper()
	c := &Cluster{t: t, bin: Binary(t), Redis: redistest.Start(t)}
	t.Cleanup(c.stopAll)
	return c
}

// Proc is one `backchannel <role>` process.
type Proc struct {
	ID     string
	Role   string
	URL    string // http://127.0.0.1:port
	Gossip string // 127.0.0.1:port
	cmd    *exec.Cmd
	out    *syncBuffer
	done   chan struct{}
	err    error
}

// Start runs `backchannel <role>` as node id, joined to the cluster's first
// node, and waits until it serves /healthz. Extra flags go last.
func (c *Cluster) Start(id, role string, extra ...string) *Proc {
	c.t.Helper()
	httpPort, gossipPort, icePort, rtspPort := freeTCP(c.t), freeTCP(c.t), freeUDP(c.t), freeTCP(c.t)
	p := &Proc{
		ID: id, Role: role,
		URL:    "http://127.0.0.1:" + strconv.Itoa(httpPort),
		Gossip: "127.0.0.1:" + strconv.Itoa(gossipPort),
		out:    &syncBuffer{},
		done:   make(chan struct{}),
	}
	args := []string{role,
		"--node-id", id,
		"--http", "127.0.0.1:" + strconv.Itoa(httpPort),
		"--ice-udp", "127.0.0.1:" + strconv.Itoa(icePort),
		"--rtsp", "127.0.0.1:" + strconv.Itoa(rtspPort), // never the shared default :8554
		"--redis", c.Redis.Addr(),
		"--cluster-bind", p.Gossip,
		"--data-dir", c.t.TempDir(),
		"--log-level", "info",
	}
	c.mu.Lock()
	if c.seed == "" {
		c.seed = p.Gossip
	} else {
		args = append(args, "--cluster-join", c.seed)
	}
	c.mu.Unlock()
	args = append(args, extra...)
	p.cmd = exec.Command(c.bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.Env = append(os.Environ(), "GOMAXPROCS=2")
	if err := p.cmd.Start(); err != nil {
		c.t.Fatalf("start %s: %v", id, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	if err := p.waitHealthy(20 * time.Second); err != nil {
		c.t.Fatalf("%s (%s) never became healthy: %v\n%s", id, role, err, p.out.String())
	}
	return p
}

func (p *Proc) waitHealthy(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return fmt.Errorf("exited: %v", p.err)
		default:
		}
		res, err := http.Get(p.URL + "/healthz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %d", res.StatusCode)
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	return last
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Kill SIGKILLs the process and waits for it to be gone.
func (p *Proc) Kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Stop sends SIGTERM and waits up to timeout for a graceful exit, reporting
// the exit error (nil for a clean exit).
func (p *Proc) Stop(timeout time.Duration) error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		p.Kill()
		return fmt.Errorf("%s did not exit within %v of SIGTERM", p.ID, timeout)
	}
}

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Log is everything the process printed.
func (p *Proc) Log() string { return p.out.String() }

// Keys reads the cluster's generated publish and operator keys from a
// node's start-up banner.
func (p *Proc) Keys() (publish, operator string) {
	for _, line := range strings.Split(p.Log(), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == "Publish" && f[1] == "key:" {
			publish = f[2]
		}
		if len(f) == 3 && f[0] == "Operator" && f[1] == "key:" {
			operator = f[2]
		}
	}
	return publish, operator
}

// WaitMembers waits until the node's cluster view (its
// backchannel_cluster_members gauge) counts at least n live nodes with role,
// so a test does not act before gossip has told the node about its peers.
func (p *Proc) WaitMembers(role string, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	label := `role="` + role + `"`
	seen := -1
	for {
		res, err := http.Get(p.URL + "/metrics")
		if err == nil {
			var body bytes.Buffer
			_, _ = body.ReadFrom(res.Body)
			res.Body.Close()
			for _, line := range strings.Split(body.String(), "\n") {
				labels, value, ok := strings.Cut(line, "} ")
				if ok && strings.HasPrefix(labels, "backchannel_cluster_members{") && strings.Contains(labels, label) {
					if f, err := strconv.ParseFloat(value, 64); err == nil {
						seen = int(f)
					}
				}
			}
			if seen >= n {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s sees %d %s nodes after %v, want %d (last error %v)", p.ID, seen, role, timeout, n, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Connect asks a node's /connect for a control-link URL.
func (p *Proc) Connect(ctx context.Context) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.URL+"/connect", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return "", fmt.Errorf("/connect on %s: status %d", p.ID, res.StatusCode)
	}
	var body struct{ URL string }
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		return "", err
	}
	return body.URL, nil
}

func (c *Cluster) stopAll() {
	c.mu.Lock()
	procs := c.procs
	c.mu.Unlock()
	for _, p := range procs {
		if !p.Exited() {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	for _, p := range procs {
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			p.Kill()
		}
	}
	if c.t.Failed() {
		for _, p := range procs {
			c.t.Logf("---- %s (%s) log ----\n%s", p.ID, p.Role, tail(p.Log(), 60))
		}
	}
}

func tail(s string, lines int) string {
	parts := strings.Split(s, "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}

func freeTCP(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// freeUDP finds a port free for UDP and TCP alike (ICE uses both).
func freeUDP(t testing.TB) int {
	for range 20 {
		u, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := u.LocalAddr().(*net.UDPAddr).Port
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		u.Close()
		if err == nil {
			l.Close()
			return port
		}
	}
	t.Fatal("no port free for both UDP and TCP")
	return 0
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
