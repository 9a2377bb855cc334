package apikeys

import (
	"context"
	"strings"
	"testing"

	"github.com/backchannel/backchannel/internal/store"
)

func TestKeys(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, _ := store.OpenFile(dir, nil)
	k, err := Open(ctx, "op-secret", st)
	if err != nil {
		t.Fatal(err)
	}
	valid := func(s string) bool { return s != "" && !strings.Contains(s, " ") }
	if p, ok := k.Authenticate(ctx, "op-secret"); !ok || !p.Operator() || !p.MayStream("any") {
		t.Fatal("operator key")
	}
	key, tok, err := k.Create(ctx, "cup studio", RoleBroadcaster, []string{"cup"}, valid)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(key.Hash, tok) || key.Hash == "" {
		t.Fatal("hash")
	}
	p, ok := k.Authenticate(ctx, tok)
	if !ok || p.Operator() || !p.MayStream("cup") || p.MayStream("other") || p.KeyID != key.ID {
		t.Fatalf("broadcaster %+v %v", p, ok)
	}
	for _, bad := range []string{"", "op-secret ", tok + "x", "bck_" + key.ID + "_nope", "bck_zz_zz"} {
		if _, ok := k.Authenticate(ctx, bad); ok {
			t.Errorf("%q accepted", bad)
		}
	}
	for _, c := range []struct {
		role    string
		streams []string
		field   string
	}{{"admin", nil, "role"}, {RoleBroadcaster, nil, "streams"}, {RoleOperator, []string{"x"}, "streams"}, {RoleBroadcaster, []string{"bad name"}, "streams"}} {
		if _, _, err := k.Create(ctx, "", c.role, c.streams, valid); err == nil || !strings.HasPrefix(err.Error(), c.field+":") {
			t.Errorf("%v: %v", c, err)
		}
	}
	_, optok, _ := k.Create(ctx, "ops", RoleOperator, nil, valid)
	// The keys survive a restart; the token is not stored anywhere.
	st.Close()
	st, _ = store.OpenFile(dir, nil)
	defer st.Close()
	k, _ = Open(ctx, "op-secret", st)
	if _, ok := k.Authenticate(ctx, tok); !ok {
		t.Fatal("key lost across a restart")
	}
	if p, ok := k.Authenticate(ctx, optok); !ok || !p.Operator() {
		t.Fatal("operator key lost")
	}
	docs, _ := st.List(ctx, Kind)
	for _, d := range docs {
		if strings.Contains(string(d), tok) || strings.Contains(string(d), optok) {
			t.Fatal("a token is stored in clear")
		}
	}
	if len(k.List()) != 2 {
		t.Fatal(k.List())
	}
	if ok, _ := k.Revoke(ctx, key.ID); !ok {
		t.Fatal("revoke")
	}
	if _, ok := k.Authenticate(ctx, tok); ok {
		t.Fatal("revoked key accepted")
	}
	if ok, _ := k.Revoke(ctx, key.ID); ok {
		t.Fatal("revoked twice")
	}
}
