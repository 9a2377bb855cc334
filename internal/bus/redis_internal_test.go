package bus

import "github.com/redis/go-redis/v9"

func toMessages(o, s, d string) []redis.XMessage {
	return []redis.XMessage{{ID: "1-0", Values: map[string]any{"o": o, "s": s, "d": d}}}
}
