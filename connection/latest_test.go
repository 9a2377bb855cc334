package connection

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"
)

// TestLatestFanoutOrderAndReplace: queued sends go out in order, a queued
// send is replaced by its successor with the same key, and waitIdle
// returns only when all of them are out.
func TestLatestFanoutOrderAndReplace(t *testing.T) {
	f := newLatestFanout()
	if f.push(latestSend{key: "k1"}) {
		t.Fatal("a send was queued with no worker to write it")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	gate := make(chan struct{})
	delivered := make(chan string, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.run(ctx, func(ls latestSend) {
			<-gate
			delivered <- string(ls.frame)
		})
	}()
	push := func(key, frame string) {
		t.Helper()
		for i := 0; !f.push(latestSend{key: key, frame: []byte(frame)}); i++ {
			if i > 1000 {
				t.Fatal("the worker never started")
			}
			time.Sleep(time.Millisecond)
		}
	}
	push("k1", "A")
	// The worker takes A and waits at the gate; the rest queue behind it.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		f.mu.Lock()
		taken := len(f.queue) == 0
		f.mu.Unlock()
		if taken || time.Now().After(deadline) {
			break
		}
	}
	push("k2", "B")
	push("k1", "C")
	push("k2", "D") // replaces B, in B's place
	idle := make(chan struct{})
	go func() { f.waitIdle(ctx); close(idle) }()
	var got []string
	for range 3 {
		select {
		case <-idle:
			t.Fatalf("waitIdle returned with sends outstanding (out: %v)", got)
		case gate <- struct{}{}:
		}
		got = append(got, <-delivered)
	}
	if want := []string{"A", "D", "C"}; !slices.Equal(got, want) {
		t.Fatalf("written %v, want %v", got, want)
	}
	select {
	case <-idle:
	case <-time.After(5 * time.Second):
		t.Fatal("waitIdle did not return once everything was out")
	}
	cancel()
	<-done
	if f.push(latestSend{key: "k3"}) {
		t.Fatal("a send was queued after the worker stopped")
	}
	f.waitIdle(context.Background()) // must not block
}

// TestLatestFanoutBounded: beyond maxLatestQueue distinct keys the caller
// writes the message itself.
func TestLatestFanoutBounded(t *testing.T) {
	f := newLatestFanout()
	f.running = true // no worker: the queue only fills
	for i := range maxLatestQueue {
		if !f.push(latestSend{key: fmt.Sprint(i)}) {
			t.Fatalf("send %d refused below the bound", i)
		}
	}
	if f.push(latestSend{key: "one more"}) {
		t.Fatal("the queue grew past its bound")
	}
	if !f.push(latestSend{key: "7"}) {
		t.Fatal("a successor of a queued send was refused at the bound")
	}
}
