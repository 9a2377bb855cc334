package loadgen

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestSummarize(t *testing.T) {
	var xs []float64
	for i := 100; i >= 1; i-- {
		xs = append(xs, float64(i))
	}
	d := Summarize(xs)
	if d.N != 100 || d.P50 != 50 || d.P99 != 99 || d.Max != 100 {
		t.Fatalf("%+v", d)
	}
	if (Summarize(nil) != Dist{}) || median([]float64{3, 1, 2, 10}) != 2.5 {
		t.Fatal("empty or median")
	}
}

func TestNoticeTS(t *testing.T) {
	ts, ok := noticeTS([]byte(`{"t":"notice","g":"global","off":3,"ep":"E","text":"x","ts":1732372800123.456}`))
	if !ok || ts != 1732372800123.456 {
		t.Fatalf("%v %v", ts, ok)
	}
	if _, ok := noticeTS([]byte(`{"t":"welcome","ts":1}`)); ok {
		t.Fatal("welcome taken for a notice")
	}
}

func TestProcAndListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pid, err := ListenerPID(ln.Addr().(*net.TCPAddr).Port)
	if err != nil || pid != os.Getpid() {
		t.Fatalf("ListenerPID = %d, %v; want %d", pid, err, os.Getpid())
	}
	s, err := SampleProc(os.Getpid())
	if err != nil || s.RSSBytes <= 0 || s.Threads <= 0 || s.CPUSeconds < 0 {
		t.Fatalf("%+v %v", s, err)
	}
}

// TestRawServerAndWorker: worker-side links through hello/welcome and
// watch/endpoint against the raw baseline, then one triggered notice
// reaches all of them with a plausible latency.
func TestRawServerAndWorker(t *testing.T) {
	raw, err := ListenRaw("127.0.0.1:0", 2)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	tg := &target{}
	r := tg.connect(command{Op: "connect", Target: "raw", URL: "ws://" + raw.Addr() + "/ws", N: 50, Src: "127.0.0.2", Stream: "demo"})
	if r.OK != 50 || r.Errors != 0 {
		t.Fatalf("connect: %+v", r)
	}
	defer tg.closeAll()
	done := make(chan struct{})
	tg.mu.Lock()
	tg.expect, tg.done = 50, done
	tg.mu.Unlock()
	resp, err := http.Post("http://"+raw.Addr()+"/trigger", "application/json", strings.NewReader(`{"group":"stream:demo","message":"hi"}`))
	if err != nil {
		t.Fatal(err)
	}
	var acc map[string]any
	json.NewDecoder(resp.Body).Decode(&acc)
	resp.Body.Close()
	if resp.StatusCode != 202 || acc["links"] != float64(50) {
		t.Fatalf("trigger: %d %v", resp.StatusCode, acc)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("not every link got the notice")
	}
	tg.mu.Lock()
	defer tg.mu.Unlock()
	for _, l := range tg.lat {
		if l < 0 || l > 5000 {
			t.Fatalf("latency %v ms", l)
		}
	}
}

// TestWorkerProtocol drives RunWorker over pipes as the coordinator does.
func TestWorkerProtocol(t *testing.T) {
	raw, err := ListenRaw("127.0.0.1:0", 1)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var in bytes.Buffer
	for _, c := range []command{
		{Op: "connect", Target: "raw", URL: "ws://" + raw.Addr() + "/ws", N: 5, Stream: "demo"},
		{Op: "expect", Target: "raw", N: 0, Timeout: 100},
		{Op: "bogus"},
	} {
		b, _ := json.Marshal(c)
		in.Write(append(b, '\n'))
	}
	var out bytes.Buffer
	if err := RunWorker(&in, &out); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{`"op":"connected","target":"raw","ok":5`, `"op":"armed"`, `"op":"error"`} {
		if !strings.Contains(got, want) {
			t.Fatalf("worker output %s lacks %s", got, want)
		}
	}
}

// TestYieldToServer: every thread of the process, and a process it starts
// afterwards, end up in SCHED_BATCH.
func TestYieldToServer(t *testing.T) {
	if err := YieldToServer(); err != nil {
		t.Fatal(err)
	}
	self, err := threadPolicies(os.Getpid())
	if err != nil || len(self) != 1 || self[unix.SCHED_BATCH] == 0 {
		t.Fatalf("this process's threads by policy: %v %v; want all SCHED_BATCH (%d)", self, err, unix.SCHED_BATCH)
	}
	child := exec.Command("sleep", "30")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { child.Process.Kill(); child.Wait() }()
	got, err := threadPolicies(child.Process.Pid)
	if err != nil || len(got) != 1 || got[unix.SCHED_BATCH] == 0 {
		t.Fatalf("a child's threads by policy: %v %v; want all SCHED_BATCH", got, err)
	}
}

// The load generators yield unless told to compete or measuring a server
// they cannot tell apart from themselves.
func TestYieldToServerAt(t *testing.T) {
	for _, tc := range []struct {
		name    string
		pid     int
		compete bool
		want    bool
	}{
		{"competes", 1, true, false},
		{"server unknown", 0, false, false},
		{"server in this process", os.Getpid(), false, false},
		{"server elsewhere", 1, false, true},
	} {
		got, err := YieldToServerAt(tc.pid, tc.compete)
		if err != nil || got != tc.want {
			t.Fatalf("%s: yielded %v (%v), want %v", tc.name, got, err, tc.want)
		}
	}
	self, err := threadPolicies(os.Getpid())
	if err != nil || len(self) != 1 || self[unix.SCHED_BATCH] == 0 {
		t.Fatalf("after yielding, this process's threads by policy: %v %v", self, err)
	}
}
