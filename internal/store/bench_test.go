package store_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/backchannel/backchannel/groups"
	"github.com/backchannel/backchannel/internal/store"
)

// BenchmarkFileSaveVotes: one group commit of 2,000 votes with their
// dimensions (one connection server's 20 ms of votes at 100k votes/s).
func BenchmarkFileSaveVotes(b *testing.B) {
	s, err := store.OpenFile(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	attrs := groups.Attrs{"country": "BR", "subdivision": "SP", "city": "São Paulo", "continent": "SA", "asn": "AS28573", "isp": "Claro",
		"device": "mobile", "os": "android", "browser": "chrome", "lang": "pt", "edge": "e1", "conn": "c1"}
	batch := make([]store.Vote, 2000)
	for i := range batch {
		batch[i] = store.Vote{Poll: "pabcdefghijklmnop", User: fmt.Sprintf("anon-%026d", i), Choice: i % 4, Attrs: attrs, AttrsKey: "voters-like-this"}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := s.SaveVotes(context.Background(), batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(batch))/b.Elapsed().Seconds(), "votes/s")
}
