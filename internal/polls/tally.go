package polls

import (
	"slices"
	"sync"

	"github.com/backchannel/backchannel/groups"
)

// Dimensions are the profile attributes a tally breaks results down by:
// every automatic group dimension but stream (a poll belongs to one).
var Dimensions = []string{
	groups.AttrCountry, groups.AttrSubdivision, groups.AttrCity, groups.AttrContinent,
	groups.AttrASN, groups.AttrISP, groups.AttrDevice, groups.AttrOS, groups.AttrBrowser,
	groups.AttrLang, groups.AttrEdge, groups.AttrConn,
}

var dimIndex = func() map[string]int {
	m := make(map[string]int, len(Dimensions))
	for i, d := range Dimensions {
		m[d] = i
	}
	return m
}()

// IsDimension reports whether results can be broken down by attr.
func IsDimension(attr string) bool { _, ok := dimIndex[attr]; return ok }

// Outcome is what Apply did with a vote.
type Outcome uint8

const (
	Counted   Outcome = iota // a first vote
	Changed                  // the user's earlier vote moved to another choice
	Unchanged                // the same choice again (a resend): nothing moved
)

// Tally counts one poll's votes. It keeps each user's current choice and
// the dimension values the vote was cast with, so a changed vote leaves
// the breakdowns exactly as a first vote for the new choice would. Values
// are interned: a million votes cost a few tens of bytes each. A Tally is
// safe for concurrent use.
type Tally struct {
	mu      sync.Mutex
	n       int
	counts  []int64
	votes   map[string]*vote
	values  []string          // interned dimension values
	ids     map[string]uint32 // value → index in values
	by      []map[uint32][]int64
	version uint64 // bumps on every change of the counts
}

type vote struct {
	choice int
	dims   []uint32 // aligned with Dimensions
}

// NewTally returns an empty tally for a poll with n choices.
func NewTally(n int) *Tally {
	t := &Tally{n: n, counts: make([]int64, n), votes: make(map[string]*vote), ids: map[string]uint32{"": 0}, values: []string{""}}
	t.by = make([]map[uint32][]int64, len(Dimensions))
	for i := range t.by {
		t.by[i] = make(map[uint32][]int64)
	}
	return t
}

func (t *Tally) intern(v string) uint32 {
	if id, ok := t.ids[v]; ok {
		return id
	}
	id := uint32(len(t.values))
	t.values = append(t.values, v)
	t.ids[v] = id
	return id
}

// Apply records user's vote for choice (0-based; the caller checked its
// range) with the voter's attributes at the time.
func (t *Tally) Apply(user string, choice int, attrs groups.Attrs) Outcome {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.votes[user]
	if old != nil && old.choice == choice {
		return Unchanged
	}
	dims := make([]uint32, len(Dimensions))
	for i, d := range Dimensions {
		dims[i] = t.intern(attrs[d])
	}
	out := Counted
	if old != nil {
		t.move(old, -1)
		out = Changed
	}
	v := &vote{choice: choice, dims: dims}
	t.votes[user] = v
	t.move(v, +1)
	t.version++
	return out
}

func (t *Tally) move(v *vote, delta int64) {
	t.counts[v.choice] += delta
	for i, id := range v.dims {
		c := t.by[i][id]
		if c == nil {
			c = make([]int64, t.n)
			t.by[i][id] = c
		}
		c[v.choice] += delta
	}
}

// Choice returns the user's current choice.
func (t *Tally) Choice(user string) (int, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	v, ok := t.votes[user]
	if !ok {
		return 0, false
	}
	return v.choice, true
}

// Counts returns the votes per choice, their total and the tally's version.
func (t *Tally) Counts() (counts []int64, total int64, version uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	counts = slices.Clone(t.counts)
	for _, c := range counts {
		total += c
	}
	return counts, total, t.version
}

// Voters returns how many users have voted.
func (t *Tally) Voters() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.votes)
}

// Breakdown returns, for one dimension, the counts per choice of every
// value that has votes (values whose votes all moved away are left out).
// Voters without the attribute are under "".
func (t *Tally) Breakdown(dim string) (map[string][]int64, bool) {
	i, ok := dimIndex[dim]
	if !ok {
		return nil, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string][]int64, len(t.by[i]))
	for id, c := range t.by[i] {
		var sum int64
		for _, n := range c {
			sum += n
		}
		if sum > 0 {
			out[t.values[id]] = slices.Clone(c)
		}
	}
	return out, true
}

// Each calls fn with every user's current vote and its dimension values,
// for persisting a snapshot.
func (t *Tally) Each(fn func(user string, choice int, attrs groups.Attrs)) {
	t.mu.Lock()
	type rec struct {
		user   string
		choice int
		attrs  groups.Attrs
	}
	recs := make([]rec, 0, len(t.votes))
	for u, v := range t.votes {
		a := make(groups.Attrs, len(Dimensions))
		for i, id := range v.dims {
			if id != 0 {
				a[Dimensions[i]] = t.values[id]
			}
		}
		recs = append(recs, rec{u, v.choice, a})
	}
	t.mu.Unlock()
	for _, r := range recs {
		fn(r.user, r.choice, r.attrs)
	}
}
