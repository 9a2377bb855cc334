// Package keys owns stream keys: the secrets that authorize publishing to a
// stream (a WHIP Bearer token, an RTSP ?key= parameter or the password of
// RTSP credentials). A stream has any number of keys, created and revoked
// through the API; the secret is shown once, at creation, and only hashes
// are stored. Stores are durable: a JSON file under the data directory for
// the embedded deployment, Redis for a cluster; both implement Store and
// pass the same tests.
//
// The development master key (--publish-key) is accepted for every stream
// and cannot be revoked.
package keys

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
)

// DigestRealm is the realm of RTSP Digest challenges. Stored HA1 values
// depend on it, so it never changes.
const DigestRealm = "backchannel"

// MasterID is the key id reported for the development master key.
const MasterID = "master"

// Errors.
var (
	ErrNotFound = errors.New("keys: no such key")
	ErrMaster   = errors.New("keys: the master key cannot be revoked")
)

// Record is a stored key: its identity and hashes, never the secret.
type Record struct {
	ID     string `json:"id"`
	Stream string `json:"stream"`
	// Hash is the hex SHA-256 of the secret. Secrets are 160 random bits,
	// so a fast hash is enough: there is nothing to guess.
	Hash string `json:"hash"`
	// DigestHA1 is the hex MD5 of "id:realm:secret", what RTSP Digest
	// authentication (RFC 2617) needs to check a response without the
	// secret. Digest clients use the key id as their user name.
	DigestHA1  string    `json:"digest_ha1"`
	CreatedAt  time.Time `json:"created_at"`
	LastUsedAt time.Time `json:"last_used_at,omitzero"`
}

// Info is a key as the API lists it.
type Info struct {
	ID         string     `json:"id"`
	Stream     string     `json:"stream"`
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
}

// Created is a new key, with the secret that is shown only this once.
type Created struct {
	Info
	Secret string `json:"key"`
}

// Store keeps key records durably.
type Store interface {
	// Add stores a new record.
	Add(ctx context.Context, r Record) error
	// List returns the records of a stream, oldest first.
	List(ctx context.Context, stream string) ([]Record, error)
	// Remove deletes a record; ErrNotFound if there is none.
	Remove(ctx context.Context, stream, id string) error
	// Touch sets a record's last use; ErrNotFound if there is none.
	Touch(ctx context.Context, stream, id string, at time.Time) error
	Close() error
}

// RevocationWatcher is a Store shared by several processes (Redis) that
// tells every one of them about revocations made by any.
type RevocationWatcher interface {
	// WatchRevocations calls fn for each key removed anywhere, until ctx
	// ends.
	WatchRevocations(ctx context.Context, fn func(stream, id string)) error
}

// touchInterval spaces the last-use writes of one key.
const touchInterval = time.Minute

// checkTimeout bounds a key check's store access: a publish must not hang
// on a slow store.
const checkTimeout = 3 * time.Second

// Keys checks, creates and revokes stream keys over a Store.
type Keys struct {
	store  Store
	master string
	log    *slog.Logger
	now    func() time.Time

	mu      sync.Mutex
	subs    map[int]func(stream, id string)
	nextSub int
	touched map[string]time.Time // stream/id → last Touch written
}

// New returns the key service of a store. master is the development key
// accepted for every stream ("" for none).
func New(store Store, master string, logger *slog.Logger) *Keys {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Keys{store: store, master: master, log: logger.With("component", "keys"), now: time.Now,
		subs: map[int]func(string, string){}, touched: map[string]time.Time{}}
}

// Store is the underlying store.
func (k *Keys) Store() Store { return k.store }

// Create makes a new key for stream and returns it with its secret.
func (k *Keys) Create(ctx context.Context, stream string) (Created, error) {
	id := "k" + randomString(8)
	secret := "sk_" + randomString(20)
	r := Record{
		ID:        id,
		Stream:    stream,
		Hash:      hashSecret(secret),
		DigestHA1: DigestHA1(id, secret),
		CreatedAt: k.now().UTC(),
	}
	if err := k.store.Add(ctx, r); err != nil {
		return Created{}, err
	}
	k.log.Info("stream key created", "stream", stream, "key", id)
	return Created{Info: r.info(), Secret: secret}, nil
}

// List returns the keys of a stream, oldest first, without secrets.
func (k *Keys) List(ctx context.Context, stream string) ([]Info, error) {
	recs, err := k.store.List(ctx, stream)
	if err != nil {
		return nil, err
	}
	out := make([]Info, 0, len(recs))
	for _, r := range recs {
		out = append(out, r.info())
	}
	return out, nil
}

// Revoke deletes a key and tells the OnRevoke subscribers, which end the
// sessions that published with it.
func (k *Keys) Revoke(ctx context.Context, stream, id string) error {
	if id == MasterID {
		return ErrMaster
	}
	if err := k.store.Remove(ctx, stream, id); err != nil {
		return err
	}
	k.log.Info("stream key revoked", "stream", stream, "key", id)
	k.notify(stream, id)
	return nil
}

// OnRevoke registers fn for revocations: those made through this Keys and,
// while Watch runs, those made by other processes sharing the store.
func (k *Keys) OnRevoke(fn func(stream, id string)) (cancel func()) {
	k.mu.Lock()
	id := k.nextSub
	k.nextSub++
	k.subs[id] = fn
	k.mu.Unlock()
	return func() {
		k.mu.Lock()
		delete(k.subs, id)
		k.mu.Unlock()
	}
}

func (k *Keys) notify(stream, id string) {
	k.mu.Lock()
	fns := make([]func(string, string), 0, len(k.subs))
	for _, fn := range k.subs {
		fns = append(fns, fn)
	}
	delete(k.touched, stream+"/"+id)
	k.mu.Unlock()
	for _, fn := range fns {
		fn(stream, id)
	}
}

// Watch relays revocations made by other processes to the OnRevoke
// subscribers until ctx ends, when the store is shared (Redis); with a
// local store it just waits for ctx.
func (k *Keys) Watch(ctx context.Context) error {
	w, ok := k.store.(RevocationWatcher)
	if !ok {
		<-ctx.Done()
		return nil
	}
	err := w.WatchRevocations(ctx, func(stream, id string) {
		// Our own revocations come back too; ending a session twice is
		// harmless.
		k.notify(stream, id)
	})
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// IdentifyPublishKey reports whether secret may publish to stream and
// names the key (MasterID for the master key).
func (k *Keys) IdentifyPublishKey(stream, secret string) (string, bool) {
	if secret == "" {
		return "", false
	}
	if k.master != "" && subtle.ConstantTimeCompare([]byte(k.master), []byte(secret)) == 1 {
		return MasterID, true
	}
	want := hashSecret(secret)
	r, ok := k.find(stream, func(r Record) bool {
		return subtle.ConstantTimeCompare([]byte(r.Hash), []byte(want)) == 1
	})
	if !ok {
		return "", false
	}
	return r.ID, true
}

// CheckPublishKey reports whether secret may publish to stream.
func (k *Keys) CheckPublishKey(stream, secret string) bool {
	_, ok := k.IdentifyPublishKey(stream, secret)
	return ok
}

// IdentifyDigest checks RTSP Digest credentials for stream: match is given
// the HA1 of each candidate key (the master key under any user name, a
// stored key when the user name is its id) and reports whether the
// client's response fits it.
func (k *Keys) IdentifyDigest(stream, username string, match func(ha1 string) bool) (string, bool) {
	if k.master != "" && match(DigestHA1(username, k.master)) {
		return MasterID, true
	}
	r, ok := k.find(stream, func(r Record) bool { return r.ID == username && match(r.DigestHA1) })
	if !ok {
		return "", false
	}
	return r.ID, true
}

// Valid reports whether the key id still authorizes stream.
func (k *Keys) Valid(stream, id string) bool {
	if id == MasterID {
		return k.master != ""
	}
	_, ok := k.find(stream, func(r Record) bool { return r.ID == id })
	return ok
}

func (k *Keys) find(stream string, pred func(Record) bool) (Record, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
	defer cancel()
	recs, err := k.store.List(ctx, stream)
	if err != nil {
		k.log.Warn("stream key lookup failed", "stream", stream, "err", err)
		return Record{}, false
	}
	for _, r := range recs {
		if pred(r) {
			k.touch(r)
			return r, true
		}
	}
	return Record{}, false
}

// touch records a key's use, at most once per touchInterval, off the
// caller's path.
func (k *Keys) touch(r Record) {
	now := k.now()
	name := r.Stream + "/" + r.ID
	k.mu.Lock()
	if last, ok := k.touched[name]; ok && now.Sub(last) < touchInterval {
		k.mu.Unlock()
		return
	}
	k.touched[name] = now
	k.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
	defer cancel()
	if err := k.store.Touch(ctx, r.Stream, r.ID, now.UTC().Truncate(time.Millisecond)); err != nil && !errors.Is(err, ErrNotFound) {
		k.log.Warn("recording a stream key's use failed", "stream", r.Stream, "key", r.ID, "err", err)
	}
}

func (r Record) info() Info {
	i := Info{ID: r.ID, Stream: r.Stream, CreatedAt: r.CreatedAt}
	if !r.LastUsedAt.IsZero() {
		t := r.LastUsedAt
		i.LastUsedAt = &t
	}
	return i
}

func hashSecret(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// DigestHA1 is RFC 2617's HA1 for a user name and password in DigestRealm.
func DigestHA1(username, password string) string {
	h := md5.Sum([]byte(username + ":" + DigestRealm + ":" + password))
	return hex.EncodeToString(h[:])
}

var b32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// randomString returns n bytes of randomness as lower-case base32.
func randomString(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("keys: no randomness: %v", err))
	}
	return b32.EncodeToString(b)
}

// sortRecords orders records oldest first (ties by id), as List returns
// them.
func sortRecords(recs []Record) {
	slices.SortFunc(recs, func(a, b Record) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
}
