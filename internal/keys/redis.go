package keys

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis key layout. Last use lives beside the records, not in them, so
// that recording a use can never bring back a record revoked meanwhile.
const (
	redisRecordsPrefix = "bc:stream-keys:"      // + stream: hash id → JSON Record
	redisUsedPrefix    = "bc:stream-keys-used:" // + stream: hash id → unix ms
	redisRevoked       = "bc:stream-keys-revoked"
)

// RedisStore keeps records in Redis, shared by every node of a cluster.
// Revocations are also published, so every ingest node can end the
// sessions of a revoked key at once (WatchRevocations).
type RedisStore struct {
	rdb *redis.Client
	own bool
}

// NewRedis returns a store on a client. Close does not close a client it
// was given.
func NewRedis(rdb *redis.Client) *RedisStore { return &RedisStore{rdb: rdb} }

// DialRedis connects to the Redis server at addr.
func DialRedis(addr string) *RedisStore {
	return &RedisStore{rdb: redis.NewClient(&redis.Options{Addr: addr}), own: true}
}

// Add stores a new record.
func (s *RedisStore) Add(ctx context.Context, r Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	ok, err := s.rdb.HSetNX(ctx, redisRecordsPrefix+r.Stream, r.ID, b).Result()
	if err != nil {
		return fmt.Errorf("keys: redis: %w", err)
	}
	if !ok {
		return fmt.Errorf("keys: duplicate id %s", r.ID)
	}
	return nil
}

// List returns the records of a stream, oldest first.
func (s *RedisStore) List(ctx context.Context, stream string) ([]Record, error) {
	pipe := s.rdb.Pipeline()
	recs := pipe.HGetAll(ctx, redisRecordsPrefix+stream)
	used := pipe.HGetAll(ctx, redisUsedPrefix+stream)
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return nil, fmt.Errorf("keys: redis: %w", err)
	}
	out := make([]Record, 0, len(recs.Val()))
	for id, v := range recs.Val() {
		var r Record
		if err := json.Unmarshal([]byte(v), &r); err != nil || r.ID != id {
			return nil, fmt.Errorf("keys: redis holds a bad record for %s/%s", stream, id)
		}
		if ms, err := strconv.ParseInt(used.Val()[id], 10, 64); err == nil {
			r.LastUsedAt = time.UnixMilli(ms).UTC()
		}
		out = append(out, r)
	}
	sortRecords(out)
	return out, nil
}

// Remove deletes a record and announces the revocation.
func (s *RedisStore) Remove(ctx context.Context, stream, id string) error {
	pipe := s.rdb.TxPipeline()
	n := pipe.HDel(ctx, redisRecordsPrefix+stream, id)
	pipe.HDel(ctx, redisUsedPrefix+stream, id)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("keys: redis: %w", err)
	}
	if n.Val() == 0 {
		return ErrNotFound
	}
	if err := s.rdb.Publish(ctx, redisRevoked, stream+"\n"+id).Err(); err != nil {
		return fmt.Errorf("keys: revoked, but announcing it failed: %w", err)
	}
	return nil
}

// Touch sets a record's last use.
func (s *RedisStore) Touch(ctx context.Context, stream, id string, at time.Time) error {
	exists, err := s.rdb.HExists(ctx, redisRecordsPrefix+stream, id).Result()
	if err != nil {
		return fmt.Errorf("keys: redis: %w", err)
	}
	if !exists {
		return ErrNotFound
	}
	if err := s.rdb.HSet(ctx, redisUsedPrefix+stream, id, at.UnixMilli()).Err(); err != nil {
		return fmt.Errorf("keys: redis: %w", err)
	}
	return nil
}

// WatchRevocations calls fn for every key removed by any process until ctx
// ends.
func (s *RedisStore) WatchRevocations(ctx context.Context, fn func(stream, id string)) error {
	sub := s.rdb.Subscribe(ctx, redisRevoked)
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		return fmt.Errorf("keys: subscribing to revocations: %w", err)
	}
	ch := sub.Channel()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case m, ok := <-ch:
			if !ok {
				return nil
			}
			stream, id, ok := strings.Cut(m.Payload, "\n")
			if ok {
				fn(stream, id)
			}
		}
	}
}

// Close closes the client if the store dialled it.
func (s *RedisStore) Close() error {
	if s.own {
		return s.rdb.Close()
	}
	return nil
}
