// Package apikeys authorizes the REST API: Bearer tokens with a role,
// operator (everything) or broadcaster (scoped to named streams). The
// operator key from the command line is always accepted; operators create
// more keys through the API. Keys are stored hashed (SHA-256 of the whole
// token: tokens are 160-bit random, so a slow hash adds nothing); the
// token itself is shown once, at creation.
package apikeys

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/backchannel/backchannel/internal/store"
)

// Roles.
const (
	RoleOperator    = "operator"
	RoleBroadcaster = "broadcaster"
)

// Kind is the store document kind of keys.
const Kind = "apikey"

// Key is a stored API key, without its secret.
type Key struct {
	ID      string    `json:"id"`
	Name    string    `json:"name,omitempty"`
	Role    string    `json:"role"`
	Streams []string  `json:"streams,omitempty"` // broadcaster scope
	Hash    string    `json:"hash,omitempty"`
	Created time.Time `json:"created_at"`
}

// Principal is who a request comes from.
type Principal struct {
	KeyID   string // "operator" for the command-line key
	Role    string
	Streams []string
}

// Operator reports whether p may do everything.
func (p Principal) Operator() bool { return p.Role == RoleOperator }

// MayStream reports whether p may act on a stream.
func (p Principal) MayStream(stream string) bool {
	return p.Operator() || slices.Contains(p.Streams, stream)
}

// Keyring holds the keys.
type Keyring struct {
	operator []byte
	st       store.Store

	mu       sync.RWMutex
	keys     map[string]Key
	reloaded time.Time
}

// Open loads the keys from st. operatorKey is the command-line key.
func Open(ctx context.Context, operatorKey string, st store.Store) (*Keyring, error) {
	if operatorKey == "" {
		return nil, errors.New("apikeys: the operator key is required")
	}
	k := &Keyring{operator: []byte(operatorKey), st: st, keys: map[string]Key{}}
	if err := k.reload(ctx); err != nil {
		return nil, err
	}
	return k, nil
}

func (k *Keyring) reload(ctx context.Context) error {
	docs, err := k.st.List(ctx, Kind)
	if err != nil {
		return fmt.Errorf("apikeys: loading: %w", err)
	}
	keys := make(map[string]Key, len(docs))
	for id, d := range docs {
		var key Key
		if err := json.Unmarshal(d, &key); err != nil || key.ID != id {
			return fmt.Errorf("apikeys: key %s is corrupt", id)
		}
		keys[id] = key
	}
	k.mu.Lock()
	k.keys, k.reloaded = keys, time.Now()
	k.mu.Unlock()
	return nil
}

const tokenPrefix = "bck_"

// Authenticate checks a token (the Bearer credential).
func (k *Keyring) Authenticate(ctx context.Context, token string) (Principal, bool) {
	if subtle.ConstantTimeCompare([]byte(token), k.operator) == 1 {
		return Principal{KeyID: "operator", Role: RoleOperator}, true
	}
	id, _, ok := strings.Cut(strings.TrimPrefix(token, tokenPrefix), "_")
	if !ok || !strings.HasPrefix(token, tokenPrefix) {
		return Principal{}, false
	}
	k.mu.RLock()
	key, found := k.keys[id]
	stale := time.Since(k.reloaded) > time.Second
	k.mu.RUnlock()
	if !found && stale {
		// Another application server may have created it.
		if k.reload(ctx) == nil {
			k.mu.RLock()
			key, found = k.keys[id]
			k.mu.RUnlock()
		}
	}
	if !found || subtle.ConstantTimeCompare([]byte(hash(token)), []byte(key.Hash)) != 1 {
		return Principal{}, false
	}
	return Principal{KeyID: key.ID, Role: key.Role, Streams: key.Streams}, true
}

func hash(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

func random(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))
}

// Create makes a key and returns it with its token, which is not stored.
// validStream checks stream names.
func (k *Keyring) Create(ctx context.Context, name, role string, streams []string, validStream func(string) bool) (Key, string, error) {
	switch role {
	case RoleOperator:
		if len(streams) > 0 {
			return Key{}, "", errors.New("streams: an operator key is not scoped to streams")
		}
	case RoleBroadcaster:
		if len(streams) == 0 {
			return Key{}, "", errors.New("streams: a broadcaster key needs at least one stream")
		}
		for _, s := range streams {
			if !validStream(s) {
				return Key{}, "", fmt.Errorf("streams: %q is not a valid stream name", s)
			}
		}
	default:
		return Key{}, "", errors.New("role: must be operator or broadcaster")
	}
	if len(name) > 128 {
		return Key{}, "", errors.New("name: at most 128 characters")
	}
	id := random(5)
	token := tokenPrefix + id + "_" + random(20)
	key := Key{ID: id, Name: name, Role: role, Streams: slices.Clone(streams), Hash: hash(token), Created: time.Now().UTC()}
	doc, _ := json.Marshal(key)
	if err := k.st.Put(ctx, Kind, id, doc); err != nil {
		return Key{}, "", fmt.Errorf("apikeys: saving: %w", err)
	}
	k.mu.Lock()
	k.keys[id] = key
	k.mu.Unlock()
	return key, token, nil
}

// List returns the keys, oldest first.
func (k *Keyring) List() []Key {
	k.mu.RLock()
	out := make([]Key, 0, len(k.keys))
	for _, key := range k.keys {
		out = append(out, key)
	}
	k.mu.RUnlock()
	slices.SortFunc(out, func(a, b Key) int { return a.Created.Compare(b.Created) })
	return out
}

// Revoke deletes a key and reports whether it existed.
func (k *Keyring) Revoke(ctx context.Context, id string) (bool, error) {
	k.mu.RLock()
	_, ok := k.keys[id]
	k.mu.RUnlock()
	if !ok {
		return false, nil
	}
	if err := k.st.Delete(ctx, Kind, id); err != nil {
		return false, err
	}
	k.mu.Lock()
	delete(k.keys, id)
	k.mu.Unlock()
	return true, nil
}

// Resave writes every key to the store again (after a backend reset).
func (k *Keyring) Resave(ctx context.Context) error {
	var errs []error
	for _, key := range k.List() {
		doc, _ := json.Marshal(key)
		errs = append(errs, k.st.Put(ctx, Kind, key.ID, doc))
	}
	return errors.Join(errs...)
}
