package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/backchannel/backchannel/groups"
	"github.com/redis/go-redis/v9"
)

// RedisOptions configure a Redis store.
type RedisOptions struct {
	Addr     string
	Password string
	DB       int
	Prefix   string // key prefix (default "bcstore:")
}

// Redis keeps state in Redis: a hash per document kind (id → document) and
// a hash per poll's votes (user → vote). Votes are written in one pipeline
// per SaveVotes call. Redis's own persistence (AOF with appendfsync) decides
// what survives a Redis crash; the application tier re-saves what it holds
// when it finds Redis reset.
//
// A vote is stored as "choice" or "choice dims", where dims names the
// voter's attributes in one more hash (dims id → attributes as JSON): the
// voters of a large poll share few sets of attributes, which a JSON vote
// each repeated (~250 of its ~280 bytes). Ids are a hash of the
// attributes, so application servers sharing one Redis agree on them
// without talking. Votes stored as JSON objects (before) are still read.
type Redis struct {
	rdb    *redis.Client
	prefix string

	mu   sync.Mutex
	dims map[any]string // Vote.AttrsKey → dims id, for dims already stored
}

// maxCachedDims bounds the ids remembered as stored; forgetting them only
// costs writing a set of attributes again.
const maxCachedDims = 1 << 16

// NewRedis connects and checks that Redis answers.
func NewRedis(o RedisOptions) (*Redis, error) {
	if o.Addr == "" {
		return nil, errors.New("store: RedisOptions.Addr is required")
	}
	if o.Prefix == "" {
		o.Prefix = "bcstore:"
	}
	rdb := redis.NewClient(&redis.Options{
		Addr: o.Addr, Password: o.Password, DB: o.DB,
		DialTimeout: time.Second, ReadTimeout: 3 * time.Second, WriteTimeout: 3 * time.Second,
		ContextTimeoutEnabled: true, DisableIdentity: true,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("store: redis at %s: %w", o.Addr, err)
	}
	return &Redis{rdb: rdb, prefix: o.Prefix}, nil
}

func (s *Redis) docKey(kind string) string  { return s.prefix + "doc:" + kind }
func (s *Redis) voteKey(poll string) string { return s.prefix + "votes:" + poll }
func (s *Redis) dimsKey() string            { return s.prefix + "dims" }

// Put implements Store.
func (s *Redis) Put(ctx context.Context, kind, id string, doc []byte) error {
	return s.rdb.HSet(ctx, s.docKey(kind), id, doc).Err()
}

// Delete implements Store.
func (s *Redis) Delete(ctx context.Context, kind, id string) error {
	return s.rdb.HDel(ctx, s.docKey(kind), id).Err()
}

// List implements Store.
func (s *Redis) List(ctx context.Context, kind string) (map[string][]byte, error) {
	m, err := s.rdb.HGetAll(ctx, s.docKey(kind)).Result()
	if err != nil {
		return nil, err
	}
	out := make(map[string][]byte, len(m))
	for k, v := range m {
		out[k] = []byte(v)
	}
	return out, nil
}

// SaveVotes implements Store: one HSET per poll, all in one pipeline.
func (s *Redis) SaveVotes(ctx context.Context, votes []Vote) error {
	if len(votes) == 0 {
		return nil
	}
	byPoll := map[string][]any{}
	var order []string
	newDims := map[string][]byte{} // dims id → attributes, not known stored
	newKeys := map[any]string{}
	s.mu.Lock()
	for i := range votes {
		v := &votes[i]
		val := strconv.Itoa(v.Choice)
		if len(v.Attrs) > 0 {
			id, ok := "", false
			if v.AttrsKey != nil {
				id, ok = s.dims[v.AttrsKey]
				if !ok {
					id, ok = newKeys[v.AttrsKey]
				}
			}
			if !ok {
				a, err := json.Marshal(v.Attrs)
				if err != nil {
					s.mu.Unlock()
					return err
				}
				id = dimsID(a)
				newDims[id] = a
				if v.AttrsKey != nil {
					newKeys[v.AttrsKey] = id
				}
			}
			val += " " + id
		}
		if _, ok := byPoll[v.Poll]; !ok {
			order = append(order, v.Poll)
		}
		byPoll[v.Poll] = append(byPoll[v.Poll], v.User, val)
	}
	s.mu.Unlock()
	pipe := s.rdb.Pipeline()
	if len(newDims) > 0 {
		// Before the votes that name them, in the same pipeline.
		args := make([]any, 0, 2*len(newDims))
		for id, a := range newDims {
			args = append(args, id, a)
		}
		pipe.HSet(ctx, s.dimsKey(), args...)
	}
	for _, p := range order {
		pipe.HSet(ctx, s.voteKey(p), byPoll[p]...)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return err
	}
	if len(newKeys) > 0 {
		s.mu.Lock()
		if s.dims == nil || len(s.dims)+len(newKeys) > maxCachedDims {
			s.dims = make(map[any]string, len(newKeys))
		}
		maps.Copy(s.dims, newKeys)
		s.mu.Unlock()
	}
	return nil
}

// dimsID names a set of attributes (their JSON, whose keys encoding/json
// sorts) by 64 bits of its SHA-256.
func dimsID(attrsJSON []byte) string {
	sum := sha256.Sum256(attrsJSON)
	return hex.EncodeToString(sum[:8])
}

// Votes implements Store.
func (s *Redis) Votes(ctx context.Context, poll string, fn func(Vote)) error {
	var cursor uint64
	var dims map[string]groups.Attrs // loaded at the first vote that names one
	for {
		kvs, next, err := s.rdb.HScan(ctx, s.voteKey(poll), cursor, "", 4096).Result()
		if err != nil {
			return err
		}
		for i := 0; i+1 < len(kvs); i += 2 {
			user, val := kvs[i], kvs[i+1]
			if strings.HasPrefix(val, "{") {
				var v Vote
				if err := json.Unmarshal([]byte(val), &v); err != nil {
					return fmt.Errorf("store: vote of %s in %s: %w", user, poll, err)
				}
				fn(v)
				continue
			}
			choiceText, id, named := strings.Cut(val, " ")
			choice, err := strconv.Atoi(choiceText)
			if err != nil || choice < 0 {
				return fmt.Errorf("store: vote of %s in %s: %q is not a vote", user, poll, val)
			}
			v := Vote{Poll: poll, User: user, Choice: choice}
			if named {
				if dims == nil {
					if dims, err = s.loadDims(ctx); err != nil {
						return err
					}
				}
				a, ok := dims[id]
				if !ok {
					return fmt.Errorf("store: vote of %s in %s names attributes %s, which are missing", user, poll, id)
				}
				v.Attrs = a
			}
			fn(v)
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}

// loadDims reads every stored set of attributes. Votes with the same set
// share one map, which callers must not modify.
func (s *Redis) loadDims(ctx context.Context) (map[string]groups.Attrs, error) {
	all, err := s.rdb.HGetAll(ctx, s.dimsKey()).Result()
	if err != nil {
		return nil, err
	}
	dims := make(map[string]groups.Attrs, len(all))
	for id, a := range all {
		var attrs groups.Attrs
		if err := json.Unmarshal([]byte(a), &attrs); err != nil {
			return nil, fmt.Errorf("store: attributes %s: %w", id, err)
		}
		dims[id] = attrs
	}
	return dims, nil
}

func (s *Redis) DeleteVotes(ctx context.Context, poll string) error {
	return s.rdb.Del(ctx, s.voteKey(poll)).Err()
}

// Close implements Store.
func (s *Redis) Close() error { return s.rdb.Close() }
