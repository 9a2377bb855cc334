package bus_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/backchannel/backchannel/internal/bus"
	"github.com/backchannel/backchannel/internal/redistest"
)

// BenchmarkRedis measures messages per second from publish to handler
// through one redis-server: 8 goroutines publish one 100-byte message per
// call, one consumer group handles them. "batched" collects concurrent
// publishes into one pipeline; "unbatched" writes each message in its own
// round trip.
func BenchmarkRedis(b *testing.B) {
	srv := redistest.Start(b)
	for _, mode := range []struct {
		name     string
		pipeline int
		delay    time.Duration
	}{
		{"batched", 0, 0},
		{"unbatched", 1, -1},
	} {
		b.Run(mode.name, func(b *testing.B) {
			flushAll(b, srv.Addr())
			pub := newRedisBus(b, srv.Addr(), bus.RedisOptions{MaxPipeline: mode.pipeline, FlushDelay: mode.delay})
			sub := newRedisBus(b, srv.Addr(), bus.RedisOptions{Block: 50 * time.Millisecond})
			var got atomic.Int64
			all := make(chan struct{})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() {
				defer close(done)
				_ = sub.Subscribe(ctx, "bench", "g", func(_ context.Context, batch []bus.Message) error {
					if got.Add(int64(len(batch))) >= int64(b.N) {
						select {
						case <-all:
						default:
							close(all)
						}
					}
					return nil
				})
			}()
			msg := []byte(fmt.Sprintf("%0100d", 7))
			const publishers = 64
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for p := range publishers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := p; i < b.N; i += publishers {
						if err := pub.Publish(context.Background(), "bench", msg); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			select {
			case <-all:
			case <-time.After(time.Minute):
				b.Fatalf("handled %d of %d", got.Load(), b.N)
			}
			el := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
			cancel()
			<-done
		})
	}
}
