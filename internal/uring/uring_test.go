//go:build linux

package uring

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"golang.org/x/sys/unix"
)

func newRing(t *testing.T, entries uint32) *Ring {
	t.Helper()
	r, err := New(entries)
	if err != nil {
		// The test machines run kernels with io_uring on; a ring that
		// cannot be made here is a failure, not a skip.
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func socketPair(t *testing.T) (a, b int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	return fds[0], fds[1]
}

func TestNopsCompleteWithTheirTags(t *testing.T) {
	r := newRing(t, 8)
	for i := range 5 {
		if err := r.Nop(uint64(100 + i)); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := r.Submit(5); err != nil || n != 5 {
		t.Fatalf("Submit = %d, %v; want 5 submitted", n, err)
	}
	got := r.Reap(nil)
	if len(got) != 5 {
		t.Fatalf("reaped %d completions, want 5", len(got))
	}
	for i, c := range got {
		if c.Tag != uint64(100+i) || c.Result != 0 || c.Err() != nil {
			t.Errorf("completion %d = %+v", i, c)
		}
	}
	if more := r.Reap(nil); len(more) != 0 {
		t.Errorf("reaped %d more after the batch", len(more))
	}
}

func TestSendAndRecvManySocketsInOneCall(t *testing.T) {
	r := newRing(t, 64)
	const pairs = 20
	var ours, theirs [pairs]int
	for i := range pairs {
		ours[i], theirs[i] = socketPair(t)
	}
	msgs := make([][]byte, pairs)
	for i := range pairs {
		msgs[i] = fmt.Appendf(nil, "frame %d for socket %d", i*i, i)
		if err := r.Send(ours[i], msgs[i], uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Submit(pairs); err != nil {
		t.Fatal(err)
	}
	for _, c := range r.Reap(nil) {
		if int(c.Result) != len(msgs[c.Tag]) {
			t.Fatalf("send %d: result %d (%v), want %d", c.Tag, c.Result, c.Err(), len(msgs[c.Tag]))
		}
	}
	bufs := make([][]byte, pairs)
	for i := range pairs {
		bufs[i] = make([]byte, 256)
		if err := r.Recv(theirs[i], bufs[i], uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Submit(pairs); err != nil {
		t.Fatal(err)
	}
	done := r.Reap(nil)
	if len(done) != pairs {
		t.Fatalf("reaped %d receives, want %d", len(done), pairs)
	}
	for _, c := range done {
		if c.Result < 0 {
			t.Fatalf("recv %d: %v", c.Tag, c.Err())
		}
		if got := bufs[c.Tag][:c.Result]; !bytes.Equal(got, msgs[c.Tag]) {
			t.Errorf("socket %d received %q, want %q", c.Tag, got, msgs[c.Tag])
		}
	}
}

func TestRecvNeverWaits(t *testing.T) {
	r := newRing(t, 4)
	a, b := socketPair(t)
	buf := make([]byte, 16)
	_ = r.Recv(a, buf, 1)
	if _, err := r.Submit(1); err != nil {
		t.Fatal(err)
	}
	c := r.Reap(nil)
	if len(c) != 1 || !errors.Is(c[0].Err(), unix.EAGAIN) {
		t.Fatalf("recv on an empty socket = %+v, want EAGAIN at once", c)
	}
	unix.Close(b)
	_ = r.Recv(a, buf, 2)
	if _, err := r.Submit(1); err != nil {
		t.Fatal(err)
	}
	if c := r.Reap(nil); len(c) != 1 || c[0].Result != 0 {
		t.Fatalf("recv after the peer closed = %+v, want 0 (end of stream)", c)
	}
}

func TestSendOnAFullSocketIsShortNotBlocked(t *testing.T) {
	r := newRing(t, 4)
	a, _ := socketPair(t)
	big := make([]byte, 8<<20) // beyond any socket buffer
	_ = r.Send(a, big, 7)
	if _, err := r.Submit(1); err != nil {
		t.Fatal(err)
	}
	c := r.Reap(nil)
	if len(c) != 1 || c[0].Result <= 0 || int(c[0].Result) >= len(big) {
		t.Fatalf("send of 8 MB = %+v, want a short count at once", c)
	}
	_ = r.Send(a, big, 8)
	if _, err := r.Submit(1); err != nil {
		t.Fatal(err)
	}
	if c := r.Reap(nil); len(c) != 1 || !errors.Is(c[0].Err(), unix.EAGAIN) {
		t.Fatalf("send on a full socket = %+v, want EAGAIN", c)
	}
}

func TestFullQueueRefusesUntilSubmitted(t *testing.T) {
	r := newRing(t, 4)
	for i := range 4 {
		if err := r.Nop(uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	if r.Space() != 0 {
		t.Errorf("Space = %d with 4 of 4 queued", r.Space())
	}
	if err := r.Nop(9); !errors.Is(err, ErrFull) {
		t.Fatalf("fifth Nop = %v, want ErrFull", err)
	}
	if _, err := r.Submit(4); err != nil {
		t.Fatal(err)
	}
	if len(r.Reap(nil)) != 4 || r.Space() != 4 {
		t.Fatalf("after submit and reap, Space = %d", r.Space())
	}
}
