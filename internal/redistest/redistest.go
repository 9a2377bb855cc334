// Package redistest runs a real, throw-away redis-server for tests: no
// persistence, a free loopback port, its own temporary directory. A test can
// SIGKILL it and start it again on the same port with an empty database,
// which is how the Redis bus proves it survives a Redis restart.
package redistest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Binary is where the server is looked for first; PATH is tried next.
const Binary = "/usr/bin/redis-server"

// Server is one redis-server process owned by a test.
type Server struct {
	t    testing.TB
	bin  string
	port int
	dir  string

	mu     sync.Mutex
	proc   *os.Process
	exited <-chan error // receives the process's exit
	out    *lockedWriter
}

// Start launches redis-server on a free loopback port and stops it when the
// test ends. A missing binary fails the test: `make test` installs it.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := Binary
	if _, err := os.Stat(bin); err != nil {
		p, lerr := exec.LookPath("redis-server")
		if lerr != nil {
			t.Fatalf("redistest: redis-server not found (%s, nor on PATH): run `make test`, which installs it (apt-get install redis-server)", Binary)
		}
		bin = p
	}
	s := &Server{t: t, bin: bin, dir: t.TempDir()}
	var err error
	for range 5 {
		s.port, err = freePort()
		if err != nil {
			continue
		}
		if err = s.launch(); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("redistest: starting redis-server: %v", err)
	}
	t.Cleanup(s.stop)
	return s
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// Kill sends SIGKILL and waits for the process to be gone: no shutdown,
// no save, connections reset.
func (s *Server) Kill() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return
	}
	_ = s.proc.Signal(syscall.SIGKILL)
	<-s.exited
	s.proc = nil
}

// Restart kills the server if it runs and starts a new one on the same port
// with an empty database.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	var err error
	// The old socket may linger briefly; redis-server sets SO_REUSEADDR,
	// but give a refused bind a few tries.
	for range 20 {
		if err = s.launch(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatalf("redistest: restarting redis-server on port %d: %v", s.port, err)
}

func (s *Server) launch() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	// A fresh directory per start guarantees an empty database even if a
	// future Redis default turned persistence on.
	dir, err := os.MkdirTemp(s.dir, "run")
	if err != nil {
		return err
	}
	cmd := exec.Command(s.bin,
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", dir,
		"--protected-mode", "no",
		"--daemonize", "no",
		"--loglevel", "warning",
	)
	out := &lockedWriter{}
	cmd.Stdout = out
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("redis-server exited (%v): %s", err, out.String())
		default:
		}
		if ping(s.Addr()) == nil {
			s.proc, s.exited, s.out = cmd.Process, exited, out
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	<-exited
	return fmt.Errorf("redis-server did not answer on %s: %s", s.Addr(), out.String())
}

func (s *Server) stop() { s.Kill() }

// Running reports whether the process is alive (it has not been killed and
// has not exited by itself).
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc != nil && s.proc.Signal(syscall.Signal(0)) == nil
}

// ping sends PING and expects +PONG.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("unexpected answer %q", line)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// lockedWriter keeps the first 64 KiB of the server's output for error
// messages.
type lockedWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *lockedWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.b.Len() > 64<<10 {
		return len(p), nil
	}
	return w.b.Write(p)
}
