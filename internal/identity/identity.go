// Package identity verifies and issues viewer identities for control links:
// HS256 JWTs signed with the operator's secret. A viewer JWT (claims sub,
// optional streams, exp) comes from the operator's own systems; an identity
// token is what a welcome message hands an anonymous viewer, so that a
// reconnect or reload is the same user.
package identity

import (
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// IdentityTTL is how long an anonymous identity token stays valid.
const IdentityTTL = 365 * 24 * time.Hour

// kindIdentity marks tokens this package issued for anonymous users.
const kindIdentity = "identity"

// Identity is a verified user.
type Identity struct {
	UID       string
	Streams   []string // streams a viewer JWT restricts the user to; nil = any
	Anonymous bool     // issued by this server, not by the operator
	Expires   time.Time
}

// MayWatch reports whether the identity allows watching stream.
func (id Identity) MayWatch(stream string) bool {
	return id.Streams == nil || slices.Contains(id.Streams, stream)
}

// Issuer signs and verifies tokens with one secret.
type Issuer struct {
	secret []byte
	now    func() time.Time
}

type claims struct {
	Streams []string `json:"streams,omitempty"`
	Kind    string   `json:"kind,omitempty"`
	jwt.RegisteredClaims
}

// NewIssuer returns an issuer for secret. An empty secret gets a random one,
// so tokens then last only as long as the process.
func NewIssuer(secret []byte) *Issuer {
	if len(secret) == 0 {
		secret = make([]byte, 32)
		_, _ = rand.Read(secret)
	}
	return &Issuer{secret: slices.Clone(secret), now: time.Now}
}

// Errors from Verify.
var (
	ErrNoToken      = errors.New("identity: no token")
	ErrInvalidToken = errors.New("identity: invalid token")
)

// Verify checks a viewer JWT or an identity token: HS256 only, a valid
// signature, a non-empty sub, and exp (when present) in the future.
func (is *Issuer) Verify(token string) (Identity, error) {
	if token == "" {
		return Identity{}, ErrNoToken
	}
	var c claims
	_, err := jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return is.secret, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithTimeFunc(is.now),
		jwt.WithLeeway(30*time.Second),
	)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	if c.Subject == "" || len(c.Subject) > 128 {
		return Identity{}, fmt.Errorf("%w: sub missing or longer than 128 bytes", ErrInvalidToken)
	}
	id := Identity{UID: c.Subject, Streams: c.Streams, Anonymous: c.Kind == kindIdentity}
	if c.ExpiresAt != nil {
		id.Expires = c.ExpiresAt.Time
	}
	return id, nil
}

// NewAnonymous makes a new user with a random id and signs its long-lived
// identity token.
func (is *Issuer) NewAnonymous() (Identity, string, error) {
	var b [15]byte
	if _, err := rand.Read(b[:]); err != nil {
		return Identity{}, "", err
	}
	uid := "anon-" + base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:])
	now := is.now()
	id := Identity{UID: uid, Anonymous: true, Expires: now.Add(IdentityTTL).Truncate(time.Second)}
	tok, err := is.sign(claims{Kind: kindIdentity, RegisteredClaims: jwt.RegisteredClaims{
		Subject: uid, IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(id.Expires),
	}})
	return id, tok, err
}

// Resolve turns what a hello carried into an identity and the token to hand
// back in welcome: a valid token keeps its user (and is handed back as is);
// no token or an invalid one gets a fresh anonymous user. fresh says which.
func (is *Issuer) Resolve(token string) (id Identity, welcomeToken string, fresh bool, err error) {
	if id, err := is.Verify(token); err == nil {
		return id, token, false, nil
	}
	id, tok, err := is.NewAnonymous()
	return id, tok, true, err
}

// MintViewer signs a viewer JWT for sub, as an operator's backend would:
// streams restricts it to those streams (nil = any), ttl sets exp (0 = none; negative mints an expired token, for tests).
func (is *Issuer) MintViewer(sub string, streams []string, ttl time.Duration) (string, error) {
	if sub == "" {
		return "", errors.New("identity: empty sub")
	}
	c := claims{Streams: streams, RegisteredClaims: jwt.RegisteredClaims{Subject: sub, IssuedAt: jwt.NewNumericDate(is.now())}}
	if ttl != 0 {
		c.ExpiresAt = jwt.NewNumericDate(is.now().Add(ttl))
	}
	return is.sign(c)
}

func (is *Issuer) sign(c claims) (string, error) {
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(is.secret)
}
