package identity

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestViewerJWT(t *testing.T) {
	is := NewIssuer([]byte("operator-secret"))
	tok, err := is.MintViewer("user-42", []string{"demo"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id, err := is.Verify(tok)
	if err != nil || id.UID != "user-42" || id.Anonymous || !id.MayWatch("demo") || id.MayWatch("other") {
		t.Fatalf("verify: %+v %v", id, err)
	}
	got, back, fresh, err := is.Resolve(tok)
	if err != nil || fresh || got.UID != "user-42" || back != tok {
		t.Fatalf("resolve: %+v %q %v %v", got, back, fresh, err)
	}
}

func TestAnonymousIdentitySurvivesReconnect(t *testing.T) {
	is := NewIssuer([]byte("s"))
	id, tok, fresh, err := is.Resolve("")
	if err != nil || !fresh || !id.Anonymous || !strings.HasPrefix(id.UID, "anon-") {
		t.Fatalf("first: %+v %v %v", id, fresh, err)
	}
	again, _, fresh, err := is.Resolve(tok)
	if err != nil || fresh || again.UID != id.UID || !again.Anonymous {
		t.Fatalf("reconnect: %+v %v %v", again, fresh, err)
	}
	other, _, _, _ := is.Resolve("")
	if other.UID == id.UID {
		t.Fatal("two anonymous users share an id")
	}
	// A restarted server with the same secret still knows the user.
	if id2, err := NewIssuer([]byte("s")).Verify(tok); err != nil || id2.UID != id.UID {
		t.Fatalf("same secret, new issuer: %v", err)
	}
}

func TestRejectedTokens(t *testing.T) {
	is := NewIssuer([]byte("s"))
	otherKey, _ := NewIssuer([]byte("not-s")).MintViewer("mallory", nil, time.Hour)
	expired, _ := is.MintViewer("late", nil, -2*time.Minute)
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": "x"}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	noSub, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte("s"))
	hs512, _ := jwt.NewWithClaims(jwt.SigningMethodHS512, jwt.MapClaims{"sub": "x"}).SignedString([]byte("s"))
	for name, tok := range map[string]string{"other key": otherKey, "expired": expired, "alg none": none, "no sub": noSub, "hs512": hs512, "garbage": "a.b.c"} {
		if _, err := is.Verify(tok); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("%s: %v", name, err)
		}
		id, back, fresh, err := is.Resolve(tok)
		if err != nil || !fresh || !id.Anonymous || back == tok {
			t.Errorf("%s: a bad token must give a fresh anonymous identity, got %+v %v %v", name, id, fresh, err)
		}
	}
	if _, err := is.Verify(""); !errors.Is(err, ErrNoToken) {
		t.Fatal(err)
	}
	if _, err := is.MintViewer("", nil, 0); err == nil {
		t.Fatal("empty sub minted")
	}
}

func TestEmptySecretIsRandom(t *testing.T) {
	a, b := NewIssuer(nil), NewIssuer(nil)
	tok, _ := a.MintViewer("u", nil, 0)
	if _, err := b.Verify(tok); err == nil {
		t.Fatal("two issuers without a secret share one")
	}
}
