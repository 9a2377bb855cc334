//go:build linux

package votebench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/backchannel/backchannel/internal/uring"
	"github.com/backchannel/backchannel/internal/wsepoll"
	"golang.org/x/sys/unix"
)

// command is what the coordinator asks a worker to do, one JSON object per
// line on the worker's stdin.
type command struct {
	Op      string   `json:"op"` // connect, expect, vote
	URL     string   `json:"url,omitempty"`
	First   int      `json:"first,omitempty"` // global index of the worker's first voter
	N       int      `json:"n,omitempty"`
	Sources []string `json:"sources,omitempty"`
	Stream  string   `json:"stream,omitempty"`
	Dialers int      `json:"dialers,omitempty"`
	K       int      `json:"k,omitempty"`       // expect: wait for every link's k-th poll frame
	Polls   []string `json:"polls,omitempty"`   // vote: poll ids, in the coordinator's order
	Choices int      `json:"choices,omitempty"` // vote
	EveryNS int64    `json:"every_ns,omitempty"`
	StartNS int64    `json:"start_ns,omitempty"` // vote: unix ns of the first possible vote
	Seed    uint64   `json:"seed,omitempty"`
	WaitNS  int64    `json:"wait_ns,omitempty"` // expect, vote: how long to wait for what is awaited
	Dir     string   `json:"dir,omitempty"`     // vote: where to write the per-vote files
}

// reply is a worker's answer, one JSON object per line on its stdout.
type reply struct {
	Op         string  `json:"op"` // connected, armed, delivered, voted, error
	OK         int     `json:"ok,omitempty"`
	Errors     int     `json:"errors,omitempty"`
	FirstError string  `json:"first_error,omitempty"`
	Times      []int64 `json:"times,omitempty"` // delivered: receive times, unix µs, one per link that got the frame

	Sent      int64  `json:"sent,omitempty"`
	Acked     int64  `json:"acked,omitempty"`
	Refused   int64  `json:"refused,omitempty"`
	DupAcks   int64  `json:"dup_acks,omitempty"`
	Lost      int64  `json:"lost,omitempty"` // links that ended during the run
	Results   int64  `json:"results,omitempty"`
	Frames    int64  `json:"frames,omitempty"` // data frames received during the vote
	Reads     int64  `json:"reads,omitempty"`  // socket reads that returned data during the vote
	FirstSend int64  `json:"first_send,omitempty"`
	LastSend  int64  `json:"last_send,omitempty"`
	LastAck   int64  `json:"last_ack,omitempty"`
	SendFile  string `json:"send_file,omitempty"`
	AckFile   string `json:"ack_file,omitempty"`
}

// worker holds a share of the voters' links: one epoll goroutine reads
// them all, and the command loop's goroutine sends the votes.
type worker struct {
	first int
	ep    int
	links []*link
	byFD  []atomic.Pointer[link]
	stop  chan struct{}
	done  chan struct{}

	mu sync.Mutex // everything below, taken once per socket read
	// Poll delivery.
	expectK    int
	expectLeft int
	times      []int64
	expectDone chan struct{}
	// The vote phase.
	polls    int
	sentAt   []int64 // voter*polls + poll: unix ns, 0 = not sent; atomic (the vote loop writes without w.mu)
	seed     uint64
	choices  int
	acked    []bool
	ackLat   []float32 // ms
	nAcked   int64
	dupAcks  int64
	refused  int64
	results  int64
	frames   int64
	reads    int64
	lost     int64
	lastAck  int64
	firstErr string
	allAcked chan struct{}
	toAck    int64
}

func newWorker() (*worker, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	var r unix.Rlimit
	_ = unix.Getrlimit(unix.RLIMIT_NOFILE, &r)
	maxFD := int(min(r.Cur, 1<<20)) + 64
	w := &worker{ep: ep, byFD: make([]atomic.Pointer[link], maxFD), stop: make(chan struct{}), done: make(chan struct{})}
	go w.readLoop()
	return w, nil
}

func (w *worker) close() {
	close(w.stop)
	<-w.done
	for _, l := range w.links {
		if l != nil {
			unix.Close(l.fd)
		}
	}
	unix.Close(w.ep)
}

// RunWorker serves one coordinator: commands on in, replies on out, until
// in ends. `backchannel votebench worker` runs it in a process of its own.
func RunWorker(in io.Reader, out io.Writer) error {
	raiseFileLimit()
	w, err := newWorker()
	if err != nil {
		return err
	}
	defer w.close()
	enc := json.NewEncoder(out)
	var encMu sync.Mutex
	send := func(r reply) {
		encMu.Lock()
		defer encMu.Unlock()
		_ = enc.Encode(r)
	}
	var pending sync.WaitGroup
	defer pending.Wait()
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var c command
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			send(reply{Op: "error", FirstError: err.Error()})
			continue
		}
		switch c.Op {
		case "connect":
			send(w.connect(c))
		case "expect":
			done := w.expect(c.K)
			send(reply{Op: "armed"})
			pending.Add(1)
			go func() {
				defer pending.Done()
				select {
				case <-done:
				case <-time.After(time.Duration(c.WaitNS)):
				}
				w.mu.Lock()
				times := slices.Clone(w.times)
				w.expectK, w.expectDone = 0, nil
				w.mu.Unlock()
				send(reply{Op: "delivered", OK: len(times), Times: times})
			}()
		case "vote":
			send(w.vote(c))
		default:
			send(reply{Op: "error", FirstError: "unknown op " + c.Op})
		}
	}
	return sc.Err()
}

func raiseFileLimit() {
	var r syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r) == nil && r.Cur < r.Max {
		r.Cur = r.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r)
	}
}

// connect opens the worker's links, from its source addresses in turn.
func (w *worker) connect(c command) reply {
	w.first = c.First
	w.links = make([]*link, c.N)
	var next, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range max(1, c.Dialers) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= c.N {
					return
				}
				var src net.IP
				if len(c.Sources) > 0 {
					src = net.ParseIP(c.Sources[(c.First+i)%len(c.Sources)])
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				fd, early, err := openLink(ctx, c.URL, src, c.Stream)
				cancel()
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				l := &link{fd: fd, voter: i, in: early}
				w.links[i] = l
				if fd >= len(w.byFD) {
					unix.Close(fd)
					w.links[i] = nil
					failed.Add(1)
					firstErr.CompareAndSwap(nil, "descriptor beyond the file limit")
					continue
				}
				w.byFD[fd].Store(l)
				ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(fd)}
				if err := unix.EpollCtl(w.ep, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		}()
	}
	wg.Wait()
	r := reply{Op: "connected", OK: c.N - int(failed.Load()), Errors: int(failed.Load())}
	if e, _ := firstErr.Load().(string); e != "" {
		r.FirstError = e
	}
	return r
}

// expect arms the wait for every open link's k-th poll frame.
func (w *worker) expect(k int) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.expectK, w.times = k, w.times[:0]
	w.expectLeft = 0
	for _, l := range w.links {
		if l != nil && !l.gone.Load() && l.polls < k {
			w.expectLeft++
		}
	}
	done := make(chan struct{})
	w.expectDone = done
	if w.expectLeft == 0 {
		close(done)
		w.expectDone = nil
	}
	return done
}

func (w *worker) readLoop() {
	defer close(w.done)
	events := make([]unix.EpollEvent, 512)
	buf := make([]byte, 256<<10)
	// With io_uring, the ready links of a round are read with one system
	// call, a slot each: the load generator's own syscalls are part of
	// what the benchmark's two cores pay for.
	ring, err := uring.New(uint32(len(events)))
	if err != nil {
		ring = nil
	} else {
		defer ring.Close()
	}
	const slot = 4 << 10
	var slots [][]byte
	var ready []*link
	var done []uring.Completion
	if ring != nil {
		slab := make([]byte, len(events)*slot)
		for i := range events {
			slots = append(slots, slab[i*slot:(i+1)*slot:(i+1)*slot])
		}
	}
	for {
		select {
		case <-w.stop:
			return
		default:
		}
		n, err := unix.EpollWait(w.ep, events, 100)
		if err != nil && err != unix.EINTR {
			return
		}
		ready = ready[:0]
		for i := 0; i < n; i++ {
			l := w.byFD[events[i].Fd].Load()
			if l == nil || l.gone.Load() {
				continue
			}
			if ring == nil {
				w.read(l, buf)
				continue
			}
			_ = ring.Recv(l.fd, slots[len(ready)], uint64(len(ready)))
			ready = append(ready, l)
		}
		if len(ready) == 0 {
			continue
		}
		_, err = ring.Submit(len(ready))
		done = ring.Reap(done[:0])
		if err != nil {
			ring.Close()
			ring = nil
		}
		for _, d := range done {
			l := ready[d.Tag]
			ready[d.Tag] = nil
			switch {
			case d.Result > 0:
				if w.received(l, slots[d.Tag][:d.Result]) && int(d.Result) == slot {
					w.read(l, buf)
				}
			case -d.Result == int32(unix.EAGAIN):
			default:
				w.read(l, buf) // the end of the stream or an error: read says which
			}
		}
		for _, l := range ready {
			if l != nil {
				w.read(l, buf)
			}
		}
	}
}

// read drains one readable link and handles its frames.
func (w *worker) read(l *link, buf []byte) {
	for range 4 {
		n, err := wsepoll.RawRead(l.fd, buf)
		if err == unix.EAGAIN {
			return
		}
		if n == 0 || err != nil {
			w.mu.Lock()
			w.linkLost(l, fmt.Sprintf("link of voter %d ended: %v", w.first+l.voter, err))
			w.mu.Unlock()
			return
		}
		if !w.received(l, buf[:n]) || n < len(buf) {
			return
		}
	}
}

// received handles bytes read from l and reports whether l is still open.
func (w *worker) received(l *link, data []byte) bool {
	now := time.Now().UnixNano()
	b := data
	if len(l.in) > 0 {
		l.in = append(l.in, b...)
		b = l.in
	}
	w.mu.Lock()
	w.reads++
	for {
		op, size, hn := frameHeader(b)
		if hn == 0 || len(b) < hn+size {
			break
		}
		payload := b[hn : hn+size]
		b = b[hn+size:]
		if !w.frame(l, op, payload, now) {
			w.mu.Unlock()
			return false
		}
	}
	w.mu.Unlock()
	if len(b) == 0 {
		l.in = l.in[:0]
	} else {
		l.in = append(l.in[:0], b...)
	}
	return true
}

var (
	ackPrefix     = []byte(`{"t":"ack","id":"`)
	pollPrefix    = []byte(`{"t":"poll"`)
	resultsPrefix = []byte(`{"t":"results"`)
	errorPrefix   = []byte(`{"t":"error"`)
)

// frame handles one server frame; callers hold w.mu. It reports whether
// the link is still open.
func (w *worker) frame(l *link, op byte, p []byte, now int64) bool {
	switch op {
	case 0x9: // ping
		var m masker
		m.seed(uint64(now))
		if err := l.send(m.frame(nil, 0xa, p)); err != nil {
			w.linkLost(l, "pong: "+err.Error())
			return false
		}
		return true
	case 0x8:
		w.linkLost(l, fmt.Sprintf("voter %d closed by the server: %q", w.first+l.voter, p))
		return false
	case 0x1, 0x2:
	default:
		return true
	}
	w.frames++
	switch {
	case bytes.HasPrefix(p, ackPrefix):
		w.ack(p[len(ackPrefix):], now)
	case bytes.HasPrefix(p, resultsPrefix):
		w.results++
	case bytes.HasPrefix(p, pollPrefix):
		l.polls++
		if w.expectK > 0 && l.polls == w.expectK {
			w.times = append(w.times, now/1000)
			if w.expectLeft--; w.expectLeft == 0 && w.expectDone != nil {
				close(w.expectDone)
				w.expectDone = nil
			}
		}
	case bytes.HasPrefix(p, errorPrefix):
		w.refused++
		if w.firstErr == "" {
			w.firstErr = string(p)
		}
	}
	return true
}

// ack records the ack of vote "<voter>.<poll>".
func (w *worker) ack(rest []byte, now int64) {
	g, rest, ok := parseUint(rest)
	if !ok || len(rest) == 0 || rest[0] != '.' {
		return
	}
	p, rest, ok := parseUint(rest[1:])
	if !ok || len(rest) == 0 || rest[0] != '"' || w.polls == 0 {
		return
	}
	v := g - w.first
	if v < 0 || v >= len(w.links) || p >= w.polls {
		return
	}
	i := v*w.polls + p
	if w.acked[i] {
		w.dupAcks++
		return
	}
	w.acked[i] = true
	w.nAcked++
	w.lastAck = now
	if at := atomic.LoadInt64(&w.sentAt[i]); at > 0 {
		w.ackLat = append(w.ackLat, float32(now-at)/1e6)
	}
	if w.nAcked == w.toAck && w.allAcked != nil {
		close(w.allAcked)
		w.allAcked = nil
	}
}

func parseUint(b []byte) (int, []byte, bool) {
	n, i := 0, 0
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9' && i < 9; i++ {
		n = n*10 + int(b[i]-'0')
	}
	return n, b[i:], i > 0
}

// linkLost marks a link gone; callers hold w.mu.
func (w *worker) linkLost(l *link, why string) {
	if l.gone.Swap(true) {
		return
	}
	w.lost++
	if w.firstErr == "" {
		w.firstErr = why
	}
	_ = unix.EpollCtl(w.ep, unix.EPOLL_CTL_DEL, l.fd, nil)
	if w.expectK > 0 && l.polls < w.expectK {
		if w.expectLeft--; w.expectLeft == 0 && w.expectDone != nil {
			close(w.expectDone)
			w.expectDone = nil
		}
	}
}

// splitmix64 mixes a seed into well-spread bits; choices, phases and poll
// orders derive from it so that the coordinator can recompute them.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// choiceOf is the choice voter g makes in poll p.
func choiceOf(seed uint64, g, p, choices int) int {
	return int(splitmix64(seed^uint64(g)<<20^uint64(p)) % uint64(choices))
}

// vote runs the vote phase for the worker's voters: voter v's k-th vote
// goes at start + phase(v) + k·every, in a poll order of its own, each
// vote its own frame and its own write; then it waits for the acks.
func (w *worker) vote(c command) reply {
	P := len(c.Polls)
	nv := len(w.links)
	w.mu.Lock()
	w.polls, w.seed, w.choices = P, c.Seed, c.Choices
	w.sentAt = make([]int64, nv*P)
	w.acked = make([]bool, nv*P)
	w.ackLat = make([]float32, 0, nv*P)
	w.nAcked, w.dupAcks, w.refused, w.results, w.frames, w.reads, w.lastAck = 0, 0, 0, 0, 0, 0, 0
	live := 0
	for _, l := range w.links {
		if l != nil && !l.gone.Load() {
			live++
		}
	}
	w.toAck = int64(live * P)
	allAcked := make(chan struct{})
	w.allAcked = allAcked
	lost0 := w.lost
	w.mu.Unlock()

	// Each voter's phase within one pause and its own poll order. The
	// orders are kept by round, in send order, so that the send loop reads
	// memory in sequence rather than one voter's array after another's.
	type sched struct {
		v     int
		l     *link
		phase int64
	}
	var voters []sched
	var perVoter [][]uint16
	for v, l := range w.links {
		if l == nil || l.gone.Load() {
			continue
		}
		g := uint64(w.first + v)
		r := rand.New(rand.NewPCG(c.Seed, g))
		order := make([]uint16, P)
		for i, p := range r.Perm(P) {
			order[i] = uint16(p)
		}
		voters = append(voters, sched{v: v, l: l, phase: int64(splitmix64(c.Seed+g) % uint64(max(1, c.EveryNS)))})
		perVoter = append(perVoter, order)
	}
	idx := make([]int, len(voters))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return int(voters[a].phase - voters[b].phase) })
	sorted := make([]sched, len(voters))
	orders := make([]uint16, P*len(voters)) // round r, i-th voter sent: orders[r*len(voters)+i]
	for i, j := range idx {
		sorted[i] = voters[j]
		for r := range P {
			orders[r*len(voters)+i] = perVoter[j][r]
		}
	}
	voters, perVoter = sorted, nil

	var m masker
	m.seed(c.Seed ^ uint64(w.first+1))
	payload := make([]byte, 0, 256)
	batch := newSendBatch()
	defer batch.close()
	var sent, firstSend, lastSend int64
	var stalled []*link
	retry := func() {
		keep := stalled[:0]
		for _, l := range stalled {
			if err := l.flushPending(); err == nil && l.pending() {
				keep = append(keep, l)
			}
		}
		stalled = keep
	}
	for r := 0; r < P; r++ {
		base := c.StartNS + int64(r)*c.EveryNS
		round := orders[r*len(voters) : (r+1)*len(voters)]
		for i, s := range voters {
			due := base + s.phase
			if d := due - time.Now().UnixNano(); d > 200_000 {
				// Nothing more is due for a while: what is gathered goes
				// out, and the loop sleeps. A vote due sooner is sent a
				// little early in the same batch: flushing before each such
				// vote made a system call of one send for a fifth of them.
				stalled = batch.flush(stalled)
				if len(stalled) > 0 {
					retry()
				}
				time.Sleep(time.Duration(d))
			}
			l := s.l
			p := int(round[i])
			g := w.first + s.v
			payload = append(payload[:0], `{"t":"vote","poll":"`...)
			payload = append(payload, c.Polls[p]...)
			payload = append(payload, `","choice":`...)
			payload = strconv.AppendInt(payload, int64(choiceOf(c.Seed, g, p, c.Choices)), 10)
			payload = append(payload, `,"id":"`...)
			payload = strconv.AppendInt(payload, int64(g), 10)
			payload = append(payload, '.')
			payload = strconv.AppendInt(payload, int64(p), 10)
			payload = append(payload, `"}`...)
			frame := m.frame(batch.buffer(), 0x1, payload)
			now := time.Now().UnixNano()
			atomic.StoreInt64(&w.sentAt[s.v*P+p], now)
			var err error
			if stalled, err = batch.send(l, frame, stalled); err != nil {
				w.mu.Lock()
				w.linkLost(l, "vote: "+err.Error())
				w.sentAt[s.v*P+p] = 0
				w.mu.Unlock()
				continue
			}
			if sent == 0 {
				firstSend = now
			}
			lastSend = now
			sent++
		}
	}
	stalled = batch.flush(stalled)
	w.mu.Lock()
	// Votes that never left (links lost) are not awaited.
	w.toAck = sent
	if w.nAcked >= w.toAck && w.allAcked != nil {
		close(w.allAcked)
		w.allAcked = nil
	}
	w.mu.Unlock()
	deadline := time.Now().Add(time.Duration(c.WaitNS))
	for len(stalled) > 0 && time.Now().Before(deadline) {
		retry()
		time.Sleep(time.Millisecond)
	}
	select {
	case <-allAcked:
	case <-time.After(time.Until(deadline)):
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	rep := reply{Op: "voted", Sent: sent, Acked: w.nAcked, Refused: w.refused, DupAcks: w.dupAcks, Lost: w.lost - lost0,
		Results: w.results, Frames: w.frames, Reads: w.reads, FirstSend: firstSend, LastSend: lastSend, LastAck: w.lastAck, FirstError: w.firstErr}
	w.allAcked = nil
	if c.Dir != "" {
		var err error
		if rep.SendFile, err = w.writeSends(c.Dir); err == nil {
			rep.AckFile, err = w.writeAckLatencies(c.Dir)
		}
		if err != nil {
			rep.Op, rep.FirstError = "error", err.Error()
		}
	}
	return rep
}

// writeSends writes (poll index uint16, choice uint8, unix ns int64) per
// vote sent, for the coordinator's tally check and latency pairing; callers
// hold w.mu.
func (w *worker) writeSends(dir string) (string, error) {
	b := make([]byte, 0, len(w.sentAt)*11)
	for i, at := range w.sentAt {
		if at == 0 {
			continue
		}
		v, p := i/w.polls, i%w.polls
		b = binary.LittleEndian.AppendUint16(b, uint16(p))
		b = append(b, byte(choiceOf(w.seed, w.first+v, p, w.choices)))
		b = binary.LittleEndian.AppendUint64(b, uint64(at))
	}
	return writeTemp(dir, "sends-*.bin", b)
}

func (w *worker) writeAckLatencies(dir string) (string, error) {
	b := make([]byte, 0, len(w.ackLat)*4)
	for _, v := range w.ackLat {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return writeTemp(dir, "acks-*.bin", b)
}

func writeTemp(dir, pattern string, b []byte) (string, error) {
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return "", err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return filepath.Clean(f.Name()), nil
}
