package store_test

import (
	"fmt"
	"maps"
	"slices"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/backchannel/backchannel/groups"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"context"

	"github.com/backchannel/backchannel/internal/redistest"
	"github.com/backchannel/backchannel/internal/store"
	"github.com/backchannel/backchannel/internal/store/storetest"
)

func TestFile(t *testing.T) {
	dir := t.TempDir()
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := store.OpenFile(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestRedis(t *testing.T) {
	r := redistest.Start(t)
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := store.NewRedis(store.RedisOptions{Addr: r.Addr()})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// A crash in the middle of a write leaves a torn last line: it is dropped,
// everything before it is kept, and the log is usable again.
func TestFileTornRecord(t *testing.T) {
	dir := t.TempDir()
	s, err := store.OpenFile(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.SaveVotes(ctx, []store.Vote{{Poll: "p", User: "u1", Choice: 1}}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	f, _ := os.OpenFile(filepath.Join(dir, "state.log"), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"op":"vote","v":{"p":"p","u":"u2"`)
	f.Close()
	s, err = store.OpenFile(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SaveVotes(ctx, []store.Vote{{Poll: "p", User: "u3", Choice: 0}}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = store.OpenFile(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	users := []string{}
	s.Votes(ctx, "p", func(v store.Vote) { users = append(users, v.User) })
	if len(users) != 2 || strings.Contains(strings.Join(users, ","), "u2") {
		t.Fatalf("users %v", users)
	}
}

func TestFileCorruptLogIsAnError(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "state.log"), []byte("garbage\n"), 0o600)
	if _, err := store.OpenFile(dir, nil); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("err %v", err)
	}
}

// The log is compacted at open once most of it is superseded.
func TestFileCompaction(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s, _ := store.OpenFile(dir, nil)
	for i := range 3000 {
		s.SaveVotes(ctx, []store.Vote{{Poll: "p", User: "same", Choice: i % 2}})
	}
	s.Close()
	before, _ := os.Stat(filepath.Join(dir, "state.log"))
	s, err := store.OpenFile(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(filepath.Join(dir, "state.log"))
	var got store.Vote
	s.Votes(ctx, "p", func(v store.Vote) { got = v })
	s.Close()
	if after.Size()*100 > before.Size() || got.Choice != 1 {
		t.Fatalf("size %d → %d, vote %+v", before.Size(), after.Size(), got)
	}
}

func TestInMemory(t *testing.T) {
	s, err := store.OpenFile("", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s.Put(ctx, "k", "a", []byte("x"))
	if m, _ := s.List(ctx, "k"); string(m["a"]) != "x" {
		t.Fatal(m)
	}
	s.Close()
	if err := s.Put(ctx, "k", "b", nil); err != store.ErrClosed {
		t.Fatalf("in-memory store after close: %v", err)
	}
}

// The hand-written vote encoder writes what the generic one would decode
// to the same vote, whatever the strings hold.
func FuzzVoteRecord(f *testing.F) {
	f.Add("p1", "anon-x", 2, "BR", "x-tier", "gold")
	f.Add("p\"1", "u\\\n", 0, "São Paulo", "x-a", "\x00")
	f.Fuzz(func(t *testing.T, poll, user string, choice int, country, xk, xv string) {
		dir := t.TempDir()
		s, err := store.OpenFile(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		in := store.Vote{Poll: poll, User: user, Choice: choice, Attrs: groups.Attrs{"country": country, xk: xv}}
		if err := s.SaveVotes(context.Background(), []store.Vote{in}); err != nil {
			t.Fatal(err)
		}
		s.Close()
		s, err = store.OpenFile(dir, nil)
		if err != nil {
			t.Fatalf("reopening: %v", err)
		}
		defer s.Close()
		var got []store.Vote
		s.Votes(context.Background(), poll, func(v store.Vote) { got = append(got, v) })
		if !utf8.ValidString(poll + user + country + xk + xv) {
			return // JSON replaces invalid UTF-8; equality is not expected
		}
		if len(got) != 1 || got[0].User != user || got[0].Choice != choice || got[0].Attrs["country"] != country || got[0].Attrs[xk] != xv {
			t.Fatalf("got %+v, want %+v", got, in)
		}
	})
}

// Votes that share an AttrsKey share one dims record in the log; their
// attributes come back after a restart and after compaction.
func TestFileWritesSharedAttributesOnce(t *testing.T) {
	dir := t.TempDir()
	s, err := store.OpenFile(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	br := groups.Attrs{"country": "BR", "device": "mobile"}
	de := groups.Attrs{"country": "DE"}
	var votes []store.Vote
	for i := range 600 {
		a, key := br, "br"
		if i%3 == 0 {
			a, key = de, "de"
		}
		votes = append(votes, store.Vote{Poll: "p", User: fmt.Sprintf("u%d", i%300), Choice: i % 2, Attrs: a, AttrsKey: key})
	}
	if err := s.SaveVotes(ctx, votes[:300]); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveVotes(ctx, votes[300:]); err != nil {
		t.Fatal(err)
	}
	s.Close()
	log, _ := os.ReadFile(filepath.Join(dir, "state.log"))
	if n := strings.Count(string(log), `"op":"dims"`); n != 2 {
		t.Fatalf("%d dims records, want 2", n)
	}
	if n := strings.Count(string(log), `"BR"`); n != 1 {
		t.Fatalf("BR written %d times", n)
	}
	check := func() {
		t.Helper()
		s, err := store.OpenFile(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		got := map[string]store.Vote{}
		s.Votes(ctx, "p", func(v store.Vote) { got[v.User] = v })
		if len(got) != 300 {
			t.Fatalf("%d votes", len(got))
		}
		for i := range 300 {
			want := votes[300+i]
			v := got[want.User]
			if v.Choice != want.Choice || v.Attrs["country"] != want.Attrs["country"] || v.Attrs["device"] != want.Attrs["device"] {
				t.Fatalf("%s: %+v, want %+v", want.User, v, want)
			}
		}
		// New votes after a restart refer to new ids, never to old ones.
		if err := s.SaveVotes(ctx, []store.Vote{{Poll: "q", User: "x", Choice: 1, Attrs: groups.Attrs{"country": "FR"}, AttrsKey: "fr"}}); err != nil {
			t.Fatal(err)
		}
	}
	check() // replay
	// Superseded votes make the log worth compacting at the next open.
	s, _ = store.OpenFile(dir, nil)
	for range 4 {
		s.SaveVotes(ctx, votes)
	}
	s.Close()
	check() // compacts, then replays the compacted log
	s, _ = store.OpenFile(dir, nil)
	defer s.Close()
	var fr []store.Vote
	s.Votes(ctx, "q", func(v store.Vote) { fr = append(fr, v) })
	if len(fr) != 1 || fr[0].Attrs["country"] != "FR" {
		t.Fatalf("q votes %+v", fr)
	}
}

// In Redis a vote takes its choice and the id of its voter's attributes,
// which are stored once however many votes share them; votes stored as
// JSON (before) are still read.
func TestRedisWritesSharedAttributesOnce(t *testing.T) {
	r := redistest.Start(t)
	s, err := store.NewRedis(store.RedisOptions{Addr: r.Addr(), Prefix: "t:"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rc := redis.NewClient(&redis.Options{Addr: r.Addr()})
	defer rc.Close()
	ctx := context.Background()
	br := groups.Attrs{"country": "BR", "device": "mobile"}
	de := groups.Attrs{"country": "DE"}
	var votes []store.Vote
	for i := range 300 {
		v := store.Vote{Poll: "p", User: fmt.Sprintf("u%d", i), Choice: i % 3, Attrs: br, AttrsKey: "br"}
		switch i % 3 {
		case 1:
			v.Attrs, v.AttrsKey = de, "de"
		case 2:
			v.Attrs, v.AttrsKey = nil, nil
		}
		votes = append(votes, v)
	}
	if err := s.SaveVotes(ctx, votes[:150]); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveVotes(ctx, votes[150:]); err != nil {
		t.Fatal(err)
	}
	// Written before the compact form: read as it was.
	old := `{"p":"p","u":"legacy","c":1,"a":{"country":"FR"}}`
	if err := rc.HSet(ctx, "t:votes:p", "legacy", old).Err(); err != nil {
		t.Fatal(err)
	}
	dims, err := rc.HGetAll(ctx, "t:dims").Result()
	if err != nil || len(dims) != 2 {
		t.Fatalf("%d sets of attributes stored (%v), want 2", len(dims), err)
	}
	stored, _ := rc.HGetAll(ctx, "t:votes:p").Result()
	size := 0
	for u, v := range stored {
		if u != "legacy" {
			size += len(v)
		}
	}
	if size > 300*20 {
		t.Fatalf("300 votes take %d bytes in Redis", size)
	}
	got := map[string]store.Vote{}
	if err := s.Votes(ctx, "p", func(v store.Vote) { got[v.User] = v }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 301 || got["legacy"].Choice != 1 || got["legacy"].Attrs["country"] != "FR" {
		t.Fatalf("%d votes read; legacy %+v", len(got), got["legacy"])
	}
	for _, want := range votes {
		v := got[want.User]
		if v.Poll != "p" || v.Choice != want.Choice || len(v.Attrs) != len(want.Attrs) || v.Attrs["country"] != want.Attrs["country"] || v.Attrs["device"] != want.Attrs["device"] {
			t.Fatalf("%s: %+v, want %+v", want.User, v, want)
		}
	}
	// A vote naming attributes that are gone is an error, not a silent loss
	// of its breakdown.
	if err := rc.HDel(ctx, "t:dims", slices.Collect(maps.Keys(dims))[0]).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Votes(ctx, "p", func(store.Vote) {}); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("votes naming missing attributes: %v", err)
	}
}
