package keys

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/backchannel/backchannel/internal/redistest"
)

// storeSuite runs the Store contract against any implementation; open
// returns a fresh, empty store and, for reopen, the same data again.
func storeSuite(t *testing.T, open func(t *testing.T) (Store, func() Store)) {
	ctx := context.Background()
	t.Run("add list remove", func(t *testing.T) {
		s, _ := open(t)
		base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		for i, id := range []string{"kb", "ka", "kc"} {
			if err := s.Add(ctx, Record{ID: id, Stream: "x", Hash: "h" + id, DigestHA1: "d", CreatedAt: base.Add(time.Duration(i) * time.Second)}); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Add(ctx, Record{ID: "kz", Stream: "y", Hash: "hz", CreatedAt: base}); err != nil {
			t.Fatal(err)
		}
		if err := s.Add(ctx, Record{ID: "ka", Stream: "x", Hash: "dup", CreatedAt: base}); err == nil {
			t.Fatal("duplicate id accepted")
		}
		got, err := s.List(ctx, "x")
		if err != nil {
			t.Fatal(err)
		}
		if ids := idsOf(got); ids != "kb,ka,kc" {
			t.Fatalf("List order %s, want creation order kb,ka,kc", ids)
		}
		if got[1].Hash != "hka" || !got[1].CreatedAt.Equal(base.Add(time.Second)) {
			t.Fatalf("record round trip: %+v", got[1])
		}
		if err := s.Remove(ctx, "x", "ka"); err != nil {
			t.Fatal(err)
		}
		if err := s.Remove(ctx, "x", "ka"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("second Remove: %v, want ErrNotFound", err)
		}
		if err := s.Remove(ctx, "y", "kb"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Remove under another stream: %v, want ErrNotFound", err)
		}
		got, _ = s.List(ctx, "x")
		if ids := idsOf(got); ids != "kb,kc" {
			t.Fatalf("after Remove: %s", ids)
		}
		if got, _ := s.List(ctx, "nothing"); len(got) != 0 {
			t.Fatalf("unknown stream lists %d records", len(got))
		}
	})
	t.Run("touch", func(t *testing.T) {
		s, _ := open(t)
		at := time.Date(2026, 5, 6, 7, 8, 9, 123e6, time.UTC)
		if err := s.Add(ctx, Record{ID: "k1", Stream: "x", Hash: "h", CreatedAt: at.Add(-time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if err := s.Touch(ctx, "x", "k1", at); err != nil {
			t.Fatal(err)
		}
		got, _ := s.List(ctx, "x")
		if !got[0].LastUsedAt.Equal(at) {
			t.Fatalf("LastUsedAt %v, want %v", got[0].LastUsedAt, at)
		}
		if err := s.Touch(ctx, "x", "nope", at); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Touch unknown: %v", err)
		}
		// A use recorded after a revocation must not bring the key back.
		if err := s.Remove(ctx, "x", "k1"); err != nil {
			t.Fatal(err)
		}
		if err := s.Touch(ctx, "x", "k1", at); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Touch after Remove: %v", err)
		}
		if got, _ := s.List(ctx, "x"); len(got) != 0 {
			t.Fatal("Touch resurrected a removed key")
		}
	})
	t.Run("durable", func(t *testing.T) {
		s, reopen := open(t)
		if err := s.Add(ctx, Record{ID: "k1", Stream: "x", Hash: "h1", DigestHA1: "d1", CreatedAt: time.UnixMilli(1e12).UTC()}); err != nil {
			t.Fatal(err)
		}
		if err := s.Add(ctx, Record{ID: "k2", Stream: "x", Hash: "h2", CreatedAt: time.UnixMilli(1e12 + 1).UTC()}); err != nil {
			t.Fatal(err)
		}
		if err := s.Remove(ctx, "x", "k2"); err != nil {
			t.Fatal(err)
		}
		_ = s.Close()
		s2 := reopen()
		got, err := s2.List(ctx, "x")
		if err != nil {
			t.Fatal(err)
		}
		if idsOf(got) != "k1" || got[0].DigestHA1 != "d1" {
			t.Fatalf("after reopen: %+v", got)
		}
	})
	t.Run("service", func(t *testing.T) { serviceSuite(t, func(t *testing.T) Store { s, _ := open(t); return s }) })
}

func idsOf(rs []Record) string {
	var ids []string
	for _, r := range rs {
		ids = append(ids, r.ID)
	}
	return strings.Join(ids, ",")
}

// serviceSuite checks Keys over a store.
func serviceSuite(t *testing.T, open func(t *testing.T) Store) {
	ctx := context.Background()
	t.Run("create check revoke", func(t *testing.T) {
		k := New(open(t), "master-secret", nil)
		c, err := k.Create(ctx, "cup")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(c.Secret, "sk_") || len(c.Secret) < 30 || c.ID == "" || c.Stream != "cup" {
			t.Fatalf("created %+v", c)
		}
		c2, err := k.Create(ctx, "cup")
		if err != nil {
			t.Fatal(err)
		}
		if c2.ID == c.ID || c2.Secret == c.Secret {
			t.Fatal("two keys share an id or secret")
		}
		if id, ok := k.IdentifyPublishKey("cup", c.Secret); !ok || id != c.ID {
			t.Fatalf("own key: %q %v", id, ok)
		}
		if k.CheckPublishKey("other", c.Secret) {
			t.Fatal("a stream's key publishes to another stream")
		}
		if k.CheckPublishKey("cup", c.Secret+"x") || k.CheckPublishKey("cup", "") {
			t.Fatal("wrong key accepted")
		}
		if id, ok := k.IdentifyPublishKey("anything", "master-secret"); !ok || id != MasterID {
			t.Fatalf("master key: %q %v", id, ok)
		}

		// Listing never shows secrets or hashes, and shows the use.
		list, err := k.List(ctx, "cup")
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 2 {
			t.Fatalf("list %+v", list)
		}
		for _, i := range list {
			if used := i.LastUsedAt != nil; used != (i.ID == c.ID) {
				t.Fatalf("key %s: last used %v (only %s was used)", i.ID, i.LastUsedAt, c.ID)
			}
		}
		b, _ := json.Marshal(list)
		if strings.Contains(string(b), c.Secret) || strings.Contains(string(b), hashSecret(c.Secret)) || strings.Contains(string(b), "hash") {
			t.Fatalf("listing leaks secrets: %s", b)
		}

		var mu sync.Mutex
		var revoked []string
		cancel := k.OnRevoke(func(stream, id string) {
			mu.Lock()
			revoked = append(revoked, stream+"/"+id)
			mu.Unlock()
		})
		defer cancel()
		if err := k.Revoke(ctx, "cup", c.ID); err != nil {
			t.Fatal(err)
		}
		if k.CheckPublishKey("cup", c.Secret) || k.Valid("cup", c.ID) {
			t.Fatal("revoked key still accepted")
		}
		if !k.CheckPublishKey("cup", c2.Secret) || !k.Valid("cup", c2.ID) {
			t.Fatal("the other key went with it")
		}
		mu.Lock()
		got := strings.Join(revoked, ",")
		mu.Unlock()
		if got != "cup/"+c.ID {
			t.Fatalf("revocation subscribers saw %q", got)
		}
		if err := k.Revoke(ctx, "cup", c.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("revoking twice: %v", err)
		}
		if err := k.Revoke(ctx, "cup", MasterID); !errors.Is(err, ErrMaster) {
			t.Fatalf("revoking the master key: %v", err)
		}
	})
	t.Run("digest", func(t *testing.T) {
		k := New(open(t), "master-secret", nil)
		c, err := k.Create(ctx, "cup")
		if err != nil {
			t.Fatal(err)
		}
		// What a client holding the secret computes (RFC 2617, no qop).
		response := func(user, pass string) string {
			ha1 := md5hex(user + ":" + DigestRealm + ":" + pass)
			return md5hex(ha1 + ":nonce:" + md5hex("ANNOUNCE:rtsp://h/cup"))
		}
		check := func(want string) func(string) bool {
			return func(ha1 string) bool { return md5hex(ha1+":nonce:"+md5hex("ANNOUNCE:rtsp://h/cup")) == want }
		}
		if id, ok := k.IdentifyDigest("cup", c.ID, check(response(c.ID, c.Secret))); !ok || id != c.ID {
			t.Fatalf("digest with the key id as user: %q %v", id, ok)
		}
		if _, ok := k.IdentifyDigest("cup", "someone", check(response("someone", c.Secret))); ok {
			t.Fatal("digest with another user name accepted a stored key")
		}
		if _, ok := k.IdentifyDigest("cup", c.ID, check(response(c.ID, "wrong"))); ok {
			t.Fatal("digest with a wrong password accepted")
		}
		if id, ok := k.IdentifyDigest("cup", "anyone", check(response("anyone", "master-secret"))); !ok || id != MasterID {
			t.Fatal("digest with the master key refused")
		}
	})
	t.Run("no master", func(t *testing.T) {
		k := New(open(t), "", nil)
		if k.CheckPublishKey("cup", "") || k.Valid("cup", MasterID) {
			t.Fatal("empty master key accepted")
		}
		if _, ok := k.IdentifyDigest("cup", "u", func(string) bool { return true }); ok {
			t.Fatal("digest matched without any key")
		}
	})
}

func md5hex(s string) string {
	h := md5.Sum([]byte(s))
	return hex.EncodeToString(h[:])
}

func TestFileStore(t *testing.T) {
	storeSuite(t, func(t *testing.T) (Store, func() Store) {
		path := filepath.Join(t.TempDir(), "sub", FileName)
		s, err := OpenFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return s, func() Store {
			s2, err := OpenFile(path)
			if err != nil {
				t.Fatal(err)
			}
			return s2
		}
	})
}

func TestRedisStore(t *testing.T) {
	srv := redistest.Start(t)
	storeSuite(t, func(t *testing.T) (Store, func() Store) {
		// One database for all subtests: flush it so each starts empty.
		s := DialRedis(srv.Addr())
		if err := s.rdb.FlushAll(context.Background()).Err(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s, func() Store {
			s2 := DialRedis(srv.Addr())
			t.Cleanup(func() { _ = s2.Close() })
			return s2
		}
	})
}

func TestFileStoreRejectsCorruptFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenFile(path); err == nil {
		t.Fatal("corrupt key file opened")
	}
	if err := os.WriteFile(path, []byte(`{"keys":[{"id":"k"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenFile(path); err == nil {
		t.Fatal("incomplete record accepted")
	}
}

func TestFileStoreKeepsNoSecretsAndIsPrivate(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	s, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	k := New(s, "", nil)
	c, err := k.Create(context.Background(), "x")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), c.Secret) || strings.Contains(string(b), strings.TrimPrefix(c.Secret, "sk_")) {
		t.Fatal("the key file holds the secret")
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", st.Mode().Perm())
	}
}

// TestRedisRevocationReachesOtherNodes: a key revoked through one process's
// Keys is reported to another's subscribers (the ingest node that holds the
// session).
func TestRedisRevocationReachesOtherNodes(t *testing.T) {
	srv := redistest.Start(t)
	app := New(DialRedis(srv.Addr()), "", nil)
	ingest := New(DialRedis(srv.Addr()), "", nil)
	t.Cleanup(func() { _ = app.Store().Close(); _ = ingest.Store().Close() })
	got := make(chan string, 4)
	ingest.OnRevoke(func(stream, id string) { got <- stream + "/" + id })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ingest.Watch(ctx) }()
	c, err := app.Create(context.Background(), "cup")
	if err != nil {
		t.Fatal(err)
	}
	if !ingest.CheckPublishKey("cup", c.Secret) {
		t.Fatal("key created on one node not accepted on another")
	}
	// The subscription may not be in place yet: revoke fresh keys until
	// one revocation is seen.
	sent := map[string]bool{}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if err := app.Revoke(context.Background(), "cup", c.ID); err != nil {
			t.Fatal(err)
		}
		sent["cup/"+c.ID] = true
		select {
		case v := <-got:
			if !sent[v] {
				t.Fatalf("revocation %q was never made", v)
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("Watch: %v", err)
			}
			return
		case <-time.After(100 * time.Millisecond):
		}
		if c, err = app.Create(context.Background(), "cup"); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	t.Fatal("revocation never reached the other node")
}
