package polls

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/backchannel/backchannel/groups"
)

// BenchmarkTallyApply counts votes the way a large live poll does: many
// tallies at once, voters arriving in no order, so that each vote touches
// memory no cache holds (67 polls × 15,000 voters, as in votebench).
func BenchmarkTallyApply(b *testing.B) {
	const polls, voters = 67, 15000
	users := make([]Voter, voters)
	for i := range users {
		users[i] = VoterOf(fmt.Sprintf("u-%08x-%d", rand.Uint32(), i))
	}
	dims := DimsOf(groups.Attrs{groups.AttrCountry: "BR", groups.AttrDevice: "mobile"})
	order := rand.Perm(polls * voters)
	b.ResetTimer()
	for n := 0; n < b.N; {
		b.StopTimer()
		tallies := make([]*Tally, polls)
		for i := range tallies {
			tallies[i] = NewTally(4, voters)
		}
		b.StartTimer()
		for _, k := range order {
			if n == b.N {
				break
			}
			tallies[k%polls].ApplyDims(users[k/polls], k%4, dims)
			n++
		}
	}
}
