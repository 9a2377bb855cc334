package node

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
)

// secretsKey is the Redis hash holding a cluster's generated secrets.
const secretsKey = "bc:secrets"

// loadSharedSecrets gives every node of a cluster the same generated
// secrets: the first node to start stores its candidates with HSETNX, and
// every node then reads what won. Explicit flags still override them.
func loadSharedSecrets(ctx context.Context, addr string, log *slog.Logger) (secrets, error) {
	client := redis.NewClient(&redis.Options{Addr: addr})
	defer client.Close()
	candidate := secrets{PublishKey: randomToken(24), OperatorKey: randomToken(24), IdentitySecret: randomToken(24)}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for attempt := 0; ; attempt++ {
		s, err := claimSecrets(ctx, client, candidate)
		if err == nil {
			return s, nil
		}
		if ctx.Err() != nil {
			return secrets{}, fmt.Errorf("reading the cluster's secrets from redis at %s: %w", addr, err)
		}
		log.Warn("redis not reachable for the cluster's secrets; retrying", "addr", addr, "err", err)
		time.Sleep(time.Duration(min(attempt+1, 5)) * 500 * time.Millisecond)
	}
}

func claimSecrets(ctx context.Context, c *redis.Client, candidate secrets) (secrets, error) {
	pipe := c.TxPipeline()
	pipe.HSetNX(ctx, secretsKey, "publish_key", candidate.PublishKey)
	pipe.HSetNX(ctx, secretsKey, "operator_key", candidate.OperatorKey)
	pipe.HSetNX(ctx, secretsKey, "identity_secret", candidate.IdentitySecret)
	all := pipe.HGetAll(ctx, secretsKey)
	if _, err := pipe.Exec(ctx); err != nil {
		return secrets{}, err
	}
	m := all.Val()
	return secrets{PublishKey: m["publish_key"], OperatorKey: m["operator_key"], IdentitySecret: m["identity_secret"]}, nil
}

// keepSecrets writes the node's secrets back with HSETNX now and then, so a
// Redis that restarted empty gets the cluster's secrets again before a new
// node could generate different ones.
func keepSecrets(ctx context.Context, addr string, s secrets) error {
	client := redis.NewClient(&redis.Options{Addr: addr})
	defer client.Close()
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			_, _ = claimSecrets(ctx, client, s) // a failure is retried on the next tick
		}
	}
}
