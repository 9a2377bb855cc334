package polls

import (
	"slices"
	"sync"
	"unique"

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

// numDims is len(Dimensions), as an array size.
const numDims = 12

var _ = [1]struct{}{}[len(Dimensions)-numDims] // Dimensions and numDims agree

// Dims are a voter's values of the breakdown dimensions, interned: voters
// with the same values share one handle, so a tally keeps one word per
// vote for them, and a voter's Dims are computed once, not per vote.
type Dims struct {
	h unique.Handle[[numDims]string]
}

// DimsOf interns the breakdown dimensions of attrs.
func DimsOf(attrs groups.Attrs) Dims {
	var v [numDims]string
	for i, d := range Dimensions {
		v[i] = attrs[d]
	}
	return Dims{unique.Make(v)}
}

// Attrs returns the dimensions that have a value, as attributes. Voters
// with the same dimensions get the same map (each profile keeps one, and a
// map per link was a tenth of an idle link's heap): it must not be
// modified.
func (d Dims) Attrs() groups.Attrs {
	sharedAttrs.mu.Lock()
	defer sharedAttrs.mu.Unlock()
	if a, ok := sharedAttrs.m[d]; ok {
		return a
	}
	v := d.h.Value()
	a := make(groups.Attrs, numDims)
	for i, val := range v {
		if val != "" {
			a[Dimensions[i]] = val
		}
	}
	if len(sharedAttrs.m) >= maxSharedAttrs {
		// Bounded: a long event can meet many combinations; starting over
		// only costs the sharing of maps made before.
		clear(sharedAttrs.m)
	}
	sharedAttrs.m[d] = a
	return a
}

var sharedAttrs = struct {
	mu sync.Mutex
	m  map[Dims]groups.Attrs
}{m: map[Dims]groups.Attrs{}}

const maxSharedAttrs = 1 << 16

// Voter is a user id, interned: a tally finds a voter by comparing one
// word, where a string key costs a hash of the whole id and a read of its
// bytes, one more cache miss per vote among a million keys.
type Voter struct {
	h unique.Handle[string]
}

// VoterOf interns a user id.
func VoterOf(user string) Voter { return Voter{unique.Make(user)} }

// ID returns the user id.
func (v Voter) ID() string { return v.h.Value() }

// Tally counts one poll's votes. It keeps each user's current choice and
// the dimension values the vote was cast with, so a changed vote leaves
// the breakdowns exactly as a first vote for the new choice would. Counts
// are kept per set of dimension values (there are few), and breakdowns by
// one dimension are summed from them when asked for. A Tally is safe for
// concurrent use.
type Tally struct {
	mu      sync.Mutex
	n       int
	counts  []int64
	votes   map[Voter]tallyVote
	byDims  map[Dims][]int64
	version uint64 // bumps on every change of the counts
}

type tallyVote struct {
	dims   Dims
	choice int32
}

// NewTally returns an empty tally for a poll with n choices, with room
// for about voters votes before it grows (the audience's size when the
// poll opens, at most maxPresize): growing a map of hundreds of thousands
// of voters while they vote costs more than the votes.
func NewTally(n, voters int) *Tally {
	voters = min(max(voters, 0), maxPresize)
	return &Tally{n: n, counts: make([]int64, n), votes: make(map[Voter]tallyVote, voters), byDims: make(map[Dims][]int64)}
}

// maxPresize bounds what a tally reserves for an audience that may not
// vote: 64k voters, a few MB.
const maxPresize = 1 << 16

// Apply records user's vote for choice (0-based; the caller checked its
// range) with the voter's attributes at the time.
func (t *Tally) Apply(user string, choice int, attrs groups.Attrs) Outcome {
	return t.ApplyDims(VoterOf(user), choice, DimsOf(attrs))
}

// ApplyDims is Apply with the voter and its dimensions already interned.
func (t *Tally) ApplyDims(user Voter, choice int, dims Dims) Outcome {
	t.mu.Lock()
	defer t.mu.Unlock()
	old, had := t.votes[user]
	if had && int(old.choice) == choice {
		return Unchanged
	}
	out := Counted
	if had {
		t.move(old, -1)
		out = Changed
	}
	v := tallyVote{dims: dims, choice: int32(choice)}
	t.votes[user] = v
	t.move(v, +1)
	t.version++
	return out
}

func (t *Tally) move(v tallyVote, delta int64) {
	t.counts[v.choice] += delta
	c := t.byDims[v.dims]
	if c == nil {
		c = make([]int64, t.n)
		t.byDims[v.dims] = c
	}
	c[v.choice] += delta
}

// Choice returns the user's current choice.
func (t *Tally) Choice(user Voter) (int, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	v, ok := t.votes[user]
	if !ok {
		return 0, false
	}
	return int(v.choice), true
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
	out := make(map[string][]int64)
	for d, c := range t.byDims {
		val := d.h.Value()[i]
		sum := out[val]
		if sum == nil {
			sum = make([]int64, t.n)
			out[val] = sum
		}
		for k, n := range c {
			sum[k] += n
		}
	}
	for val, c := range out {
		var n int64
		for _, x := range c {
			n += x
		}
		if n == 0 {
			delete(out, val)
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
		dims   Dims
	}
	recs := make([]rec, 0, len(t.votes))
	for u, v := range t.votes {
		recs = append(recs, rec{u.ID(), int(v.choice), v.dims})
	}
	t.mu.Unlock()
	attrs := map[Dims]groups.Attrs{}
	for _, r := range recs {
		a, ok := attrs[r.dims]
		if !ok {
			a = r.dims.Attrs()
			attrs[r.dims] = a
		}
		fn(r.user, r.choice, a)
	}
}
