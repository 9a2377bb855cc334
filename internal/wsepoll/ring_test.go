//go:build linux

package wsepoll

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestMain runs the package's tests twice: with io_uring batching (the
// default where the kernel has it) and again, in a child process, with
// plain system calls, so that both paths are held to the same tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if code != 0 || os.Getenv(plainEnv) != "" {
		os.Exit(code)
	}
	cmd := exec.Command(os.Args[0], os.Args[1:]...)
	cmd.Env = append(os.Environ(), plainEnv+"=1")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	fmt.Println("wsepoll: the same tests again with plain system calls (" + plainEnv + "=1)")
	if err := cmd.Run(); err != nil {
		os.Exit(1)
	}
	os.Exit(0)
}

const plainEnv = "WSEPOLL_TEST_PLAIN_SYSCALLS"

func testConfig(cfg Config) Config {
	cfg.PlainSyscalls = os.Getenv(plainEnv) != ""
	return cfg
}

// ringFixture is a fixture whose transport must batch with io_uring.
func ringFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	f := newFixture(t, cfg)
	if !f.tr.ringOK && !cfg.PlainSyscalls {
		t.Fatal("io_uring is not available here: the batched path is untested (run with " + plainEnv + "=1 only on kernels without it)")
	}
	return f
}

func TestBatchFanOut(t *testing.T) {
	f := ringFixture(t, testConfig(Config{}))
	const n = 40
	clients := make([]*rawClient, n)
	conns := make([]*Conn, n)
	for i := range n {
		clients[i] = f.raw(nil)
		conns[i] = f.conn(i)
	}
	// One link has a backlog: its frame must queue behind it, in order.
	big := Frame(bytes.Repeat([]byte("b"), 256<<10))
	for conns[7].Backlog() == 0 {
		conns[7].Send(big, "", true)
	}
	b := f.tr.Batch()
	if (b == nil) != f.tr.cfg.PlainSyscalls {
		t.Fatalf("Batch() = %v with PlainSyscalls %v", b, f.tr.cfg.PlainSyscalls)
	}
	frame := Frame([]byte("to everyone"))
	for _, c := range conns {
		if r := b.Send(c, frame, "", true); r != Sent && r != Queued {
			t.Fatalf("batch send: %v", r)
		}
	}
	b.Release()
	for i, c := range clients {
		for {
			op, p := c.next()
			if op != opText {
				t.Fatalf("client %d: op %#x", i, op)
			}
			if string(p) == "to everyone" {
				break
			}
			if i != 7 || p[0] != 'b' {
				t.Fatalf("client %d got %q before the fan-out frame", i, p[:min(len(p), 20)])
			}
		}
	}
}

// A connection finished while its write waits in a batch keeps its
// descriptor until the batch is flushed: the number cannot be handed to a
// new connection that would then receive the old one's frame.
func TestConnFinishedWhileItsWriteIsBatched(t *testing.T) {
	f := ringFixture(t, testConfig(Config{}))
	if f.tr.cfg.PlainSyscalls {
		t.Skip("no batch in the plain-syscall run: covered by the io_uring run")
	}
	old := f.raw(nil)
	oldConn := f.conn(0)
	b := f.tr.Batch()
	b.Send(oldConn, Frame([]byte("for the old link only")), "", true)
	oldConn.Abort()
	f.rec.wait(t, func() bool { return len(f.rec.closes) == 1 })
	// The descriptor is still open (a dup of a closed fd would fail).
	if fd, err := unix.FcntlInt(uintptr(oldConn.fd), unix.F_DUPFD_CLOEXEC, 0); err != nil {
		t.Fatalf("the finished link's descriptor was closed under its batched write: %v", err)
	} else {
		unix.Close(fd)
	}
	fresh := f.raw(nil)
	freshConn := f.conn(1)
	if freshConn.fd == oldConn.fd {
		t.Fatal("the descriptor number was reused while a write to it waited")
	}
	b.Release()
	// The old client sees the end of its stream (the frame may or may not
	// precede it); the new one gets nothing meant for the old.
	old.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 256)
	for {
		if _, err := old.br.Read(buf); err != nil {
			break
		}
	}
	freshConn.Send(Frame([]byte("fresh")), "", true)
	if op, p := fresh.next(); op != opText || string(p) != "fresh" {
		t.Fatalf("new link got op %#x %q first", op, p)
	}
}

// The acknowledgements a poller flushes (Defer) arrive, batched or not.
func TestDeferredFramesFromManyLinks(t *testing.T) {
	f := newFixture(t, testConfig(Config{DeferDelay: 5 * time.Millisecond}))
	const n = 30
	clients := make([]*rawClient, n)
	conns := make([]*Conn, n)
	for i := range n {
		clients[i] = f.raw(nil)
		conns[i] = f.conn(i) // before the next dial: the list is in upgrade order
	}
	for i, c := range conns {
		c.Defer(Frame(fmt.Appendf(nil, "ack %d", i)))
	}
	for i, c := range clients {
		if op, p := c.next(); op != opText || string(p) != fmt.Sprintf("ack %d", i) {
			t.Fatalf("client %d: op %#x %q", i, op, p)
		}
	}
}

// A deferred frame waits its own DeferDelay: the deadline of earlier
// frames, which left with another write before it was deferred, does not
// write it early. (Before, it did, and with acks deferred often that was
// about one extra write per link for every frame that carried acks.)
func TestDeferredFrameWaitsItsOwnDelay(t *testing.T) {
	const delay = 400 * time.Millisecond
	f := newFixture(t, testConfig(Config{DeferDelay: delay}))
	client := f.raw(nil)
	c := f.conn(0)
	c.Defer(Frame([]byte("ack 1")))
	time.Sleep(delay / 2)
	c.Send(Frame([]byte("results")), "", true) // takes ack 1 along
	deferred := time.Now()
	c.Defer(Frame([]byte("ack 2"))) // the deadline of ack 1 is still pending
	for _, want := range []string{"ack 1", "results"} {
		if op, p := client.next(); op != opText || string(p) != want {
			t.Fatalf("got op %#x %q, want %q", op, p, want)
		}
	}
	if op, p := client.next(); op != opText || string(p) != "ack 2" {
		t.Fatalf("got op %#x %q, want ack 2", op, p)
	}
	if waited := time.Since(deferred); waited < delay {
		t.Fatalf("ack 2 was written %v after it was deferred, before its delay of %v", waited, delay)
	}
}

func TestNilBatchSendsAtOnce(t *testing.T) {
	f := newFixture(t, testConfig(Config{}))
	c := f.raw(nil)
	var b *Batch
	if r := b.Send(f.conn(0), Frame([]byte("now")), "", false); r != Sent {
		t.Fatalf("nil batch send = %v", r)
	}
	b.Flush()
	b.Release()
	if _, p := c.next(); string(p) != "now" {
		t.Fatalf("got %q", p)
	}
}

// A poller writes at most maxDeferredPerRound deferred frames a round, so
// that thousands falling due together do not keep it from reading; the
// deadline it returns says at once that more are due.
func TestDeferredWritesAreBoundedPerRound(t *testing.T) {
	p := &poller{}
	const due = 2*maxDeferredPerRound + 10
	for range due {
		p.deferred = append(p.deferred, deferral{at: 100})
	}
	p.deferred = append(p.deferred, deferral{at: 5000})
	var rounds []int
	now := int64(1000)
	for {
		got, next := p.takeDue(nil, now)
		rounds = append(rounds, len(got))
		if next != 5000 && next > now {
			t.Fatalf("round %d: next deadline %d, want one already past while more are due", len(rounds), next)
		}
		if next == 5000 {
			break
		}
	}
	if want := []int{maxDeferredPerRound, maxDeferredPerRound, 10}; !slices.Equal(rounds, want) {
		t.Fatalf("deferred writes per round %v, want %v", rounds, want)
	}
	if got, next := p.takeDue(nil, 5000); len(got) != 1 || next != 0 {
		t.Fatalf("the last deferral: %d taken, next %d", len(got), next)
	}
}

// With WriteDeferredWhenQuiet, a poller that has nothing to read writes
// its deferred frames without waiting for their delay: all of them, more
// than one round's bound, soon after the links fall quiet.
func TestQuietPollerWritesDeferredFramesEarly(t *testing.T) {
	const delay = time.Minute
	f := newFixture(t, testConfig(Config{DeferDelay: delay, WriteDeferredWhenQuiet: true, Pollers: 1}))
	n := 2*maxDeferredPerRound + 10
	clients := make([]*rawClient, n)
	conns := make([]*Conn, n)
	for i := range n {
		clients[i] = f.raw(nil)
		conns[i] = f.conn(i)
	}
	start := time.Now()
	for i, c := range conns {
		c.Defer(Frame(fmt.Appendf(nil, "ack %d", i)))
	}
	for i, c := range clients {
		if op, p := c.next(); op != opText || string(p) != fmt.Sprintf("ack %d", i) {
			t.Fatalf("client %d: op %#x %q", i, op, p)
		}
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("the deferred frames of quiet links took %v, with a delay of %v", took, delay)
	}
}

// OnRoundEnd runs on the poller after the round's messages were handled.
func TestRoundEndFollowsTheRoundsMessages(t *testing.T) {
	var rec atomic.Pointer[recorder]
	var mu sync.Mutex
	var seen []int // messages handled at each round end
	f := newFixture(t, testConfig(Config{OnRoundEnd: func() {
		r := rec.Load()
		if r == nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, len(r.messages()))
	}}))
	rec.Store(f.rec)
	c := f.raw(nil)
	c.send(clientFrame(opText, true, []byte("hello"), testMask))
	f.rec.wait(t, func() bool { return len(f.rec.msgs) == 1 })
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		got := slices.Clone(seen)
		mu.Unlock()
		if slices.Contains(got, 1) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("round ends saw %v messages handled, never the one sent", got)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
