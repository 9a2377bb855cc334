package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

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
type Redis struct {
	rdb    *redis.Client
	prefix string
}

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
	for i := range votes {
		v := &votes[i]
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if _, ok := byPoll[v.Poll]; !ok {
			order = append(order, v.Poll)
		}
		byPoll[v.Poll] = append(byPoll[v.Poll], v.User, b)
	}
	pipe := s.rdb.Pipeline()
	for _, p := range order {
		pipe.HSet(ctx, s.voteKey(p), byPoll[p]...)
	}
	_, err := pipe.Exec(ctx)
	return err
}

// Votes implements Store, reading the hash in HSCAN pages.
func (s *Redis) Votes(ctx context.Context, poll string, fn func(Vote)) error {
	var cursor uint64
	for {
		kvs, next, err := s.rdb.HScan(ctx, s.voteKey(poll), cursor, "", 4096).Result()
		if err != nil {
			return err
		}
		for i := 0; i+1 < len(kvs); i += 2 {
			var v Vote
			if err := json.Unmarshal([]byte(kvs[i+1]), &v); err != nil {
				return fmt.Errorf("store: vote of %s in %s: %w", kvs[i], poll, err)
			}
			fn(v)
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}

// DeleteVotes implements Store.
func (s *Redis) DeleteVotes(ctx context.Context, poll string) error {
	return s.rdb.Del(ctx, s.voteKey(poll)).Err()
}

// Close implements Store.
func (s *Redis) Close() error { return s.rdb.Close() }
