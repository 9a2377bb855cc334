package redistest_test

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/backchannel/backchannel/internal/redistest"
)

// do sends one inline command and returns the first line of the answer.
func do(t *testing.T, addr, cmd string) (string, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte(cmd + "\r\n")); err != nil {
		return "", err
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	if strings.HasPrefix(line, "$") && !strings.HasPrefix(line, "$-1") {
		line, err = r.ReadString('\n')
	}
	return strings.TrimSpace(line), err
}

func TestKillRestartEmpties(t *testing.T) {
	s := redistest.Start(t)
	if got, err := do(t, s.Addr(), "SET k v"); err != nil || got != "+OK" {
		t.Fatalf("SET: %q %v", got, err)
	}
	if got, _ := do(t, s.Addr(), "GET k"); got != "v" {
		t.Fatalf("GET k = %q", got)
	}
	if got, _ := do(t, s.Addr(), "CONFIG GET save"); got == "" {
		t.Fatal("CONFIG GET failed")
	}
	s.Kill()
	if s.Running() {
		t.Fatal("still running after Kill")
	}
	if _, err := do(t, s.Addr(), "PING"); err == nil {
		t.Fatal("a killed server still answers")
	}
	s.Restart()
	if !s.Running() {
		t.Fatal("not running after Restart")
	}
	if got, err := do(t, s.Addr(), "GET k"); err != nil || got != "$-1" {
		t.Fatalf("after restart GET k = %q, %v; want an empty database", got, err)
	}
}

func TestServersAreSeparate(t *testing.T) {
	a, b := redistest.Start(t), redistest.Start(t)
	if a.Addr() == b.Addr() {
		t.Fatal("two servers on one address")
	}
	_, _ = do(t, a.Addr(), "SET only-a 1")
	if got, _ := do(t, b.Addr(), "GET only-a"); got != "$-1" {
		t.Fatalf("b sees a's key: %q", got)
	}
}
