package bus_test

import (
	"context"
	"testing"
	"time"

	"github.com/backchannel/backchannel/internal/bus"
	"github.com/backchannel/backchannel/internal/bus/bustest"
	"github.com/backchannel/backchannel/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// flushAll empties the server between subtests.
func flushAll(t testing.TB, addr string) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, DisableIdentity: true})
	defer c.Close()
	if err := c.FlushAll(context.Background()).Err(); err != nil {
		t.Fatalf("FLUSHALL: %v", err)
	}
}

func newRedisBus(t testing.TB, addr string, o bus.RedisOptions) *bus.Redis {
	t.Helper()
	o.Addr = addr
	if o.RetryDelay == 0 {
		o.RetryDelay = 5 * time.Millisecond
	}
	b, err := bus.NewRedis(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func TestRedisBus(t *testing.T) {
	srv := redistest.Start(t)
	bustest.Run(t, func(t *testing.T) bus.Bus {
		flushAll(t, srv.Addr())
		return newRedisBus(t, srv.Addr(), bus.RedisOptions{})
	})
}
