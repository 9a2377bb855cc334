// Package storetest is the conformance suite every store.Store passes.
package storetest

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/backchannel/backchannel/groups"
	"github.com/backchannel/backchannel/internal/store"
)

// Run checks a store. open returns a store over the same durable state
// each time it is called (after the previous one was closed), so that the
// suite can check what survives a restart.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()
	t.Run("Documents", func(t *testing.T) {
		s := open(t)
		must(t, s.Put(ctx, "poll", "a", []byte(`{"id":"a","n":1}`)))
		must(t, s.Put(ctx, "poll", "b", []byte(`{"id":"b"}`)))
		must(t, s.Put(ctx, "poll", "a", []byte(`{"id":"a","n":2}`)))
		must(t, s.Put(ctx, "key", "k", []byte("not json \x00")))
		must(t, s.Delete(ctx, "poll", "b"))
		must(t, s.Delete(ctx, "poll", "never"))
		check := func(s store.Store) {
			t.Helper()
			m, err := s.List(ctx, "poll")
			must(t, err)
			if len(m) != 1 || string(m["a"]) != `{"id":"a","n":2}` {
				t.Fatalf("polls %q", m)
			}
			k, err := s.List(ctx, "key")
			must(t, err)
			if string(k["k"]) != "not json \x00" {
				t.Fatalf("keys %q", k)
			}
			if e, _ := s.List(ctx, "empty"); len(e) != 0 {
				t.Fatalf("empty kind %v", e)
			}
		}
		check(s)
		must(t, s.Close())
		s = open(t)
		check(s)
		must(t, s.Close())
	})
	t.Run("Votes", func(t *testing.T) {
		s := open(t)
		must(t, s.SaveVotes(ctx, []store.Vote{
			{Poll: "p1", User: "u1", Choice: 0, Attrs: groups.Attrs{"country": "BR"}},
			{Poll: "p1", User: "u2", Choice: 1},
			{Poll: "p2", User: "u1", Choice: 2},
		}))
		must(t, s.SaveVotes(ctx, []store.Vote{{Poll: "p1", User: "u1", Choice: 1, Attrs: groups.Attrs{"country": "DE"}}}))
		must(t, s.SaveVotes(ctx, nil))
		check := func(s store.Store) {
			t.Helper()
			got := map[string]store.Vote{}
			calls := 0
			must(t, s.Votes(ctx, "p1", func(v store.Vote) { got[v.User] = v; calls++ }))
			if calls != 2 { // u1's changed vote once, not twice
				t.Fatalf("p1: %d votes read back, want 2 (one per user)", calls)
			}
			if len(got) != 2 || got["u1"].Choice != 1 || got["u1"].Attrs["country"] != "DE" || got["u2"].Choice != 1 || got["u2"].Poll != "p1" {
				t.Fatalf("p1 votes %+v", got)
			}
			n := 0
			must(t, s.Votes(ctx, "p2", func(store.Vote) { n++ }))
			if n != 1 {
				t.Fatalf("p2 has %d votes", n)
			}
		}
		check(s)
		must(t, s.Close())
		s = open(t)
		check(s)
		must(t, s.DeleteVotes(ctx, "p2"))
		must(t, s.Close())
		s = open(t)
		n := 0
		must(t, s.Votes(ctx, "p2", func(store.Vote) { n++ }))
		if n != 0 {
			t.Fatalf("deleted poll still has %d votes", n)
		}
		must(t, s.Close())
	})
	t.Run("ConcurrentBatches", func(t *testing.T) {
		s := open(t)
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for b := range 20 {
					batch := make([]store.Vote, 50)
					for i := range batch {
						batch[i] = store.Vote{Poll: "big", User: fmt.Sprintf("w%d-%d-%d", w, b, i), Choice: i % 3}
					}
					if err := s.SaveVotes(ctx, batch); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		must(t, s.Close())
		s = open(t)
		counts := [3]int{}
		must(t, s.Votes(ctx, "big", func(v store.Vote) { counts[v.Choice]++ }))
		if counts[0]+counts[1]+counts[2] != 8000 || counts[0] != 8*20*17 {
			t.Fatalf("counts %v", counts)
		}
		must(t, s.Close())
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
