package groups

import (
	"fmt"
	"slices"
	"sync"
)

// Change lists the groups a member entered and left, sorted by id.
type Change struct {
	Entered []string
	Left    []string
}

// Empty reports whether nothing changed.
func (c Change) Empty() bool { return len(c.Entered) == 0 && len(c.Left) == 0 }

// Index keeps group membership for a set of members (links on a connection
// server, profiles on the application server) and updates it incrementally as
// attributes change. Automatic groups are kept as attribute → value → members;
// a custom group keeps its own member set and is re-evaluated for a member
// only when one of the attributes its predicate reads changes. So finding a
// group's members never scans all profiles.
//
// An Index is safe for concurrent use. ForEach holds a read lock while it
// calls its function, which must therefore not call back into the Index.
type Index[M comparable] struct {
	mu      sync.RWMutex
	attrs   map[M]Attrs
	byValue map[string]map[string]map[M]struct{} // attr → value → members
	custom  map[string]*customGroup[M]
	readers map[string][]*customGroup[M] // attr → custom groups whose predicate reads it
}

type customGroup[M comparable] struct {
	id      string
	pred    *Predicate
	attrs   []string
	members map[M]struct{}
}

// NewIndex returns an empty index.
func NewIndex[M comparable]() *Index[M] {
	return &Index[M]{
		attrs:   make(map[M]Attrs),
		byValue: make(map[string]map[string]map[M]struct{}),
		custom:  make(map[string]*customGroup[M]),
		readers: make(map[string][]*customGroup[M]),
	}
}

// Len returns the number of members.
func (ix *Index[M]) Len() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return len(ix.attrs)
}

// Add inserts m with attrs (replacing any attributes it had) and reports the
// groups it entered and left, global included.
func (ix *Index[M]) Add(m M, attrs Attrs) Change {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	old, existed := ix.attrs[m]
	next := make(Attrs, len(attrs))
	for k, v := range attrs {
		if v != "" {
			next[k] = v
		}
	}
	if !existed {
		old = Attrs{}
	}
	ix.attrs[m] = next
	ch := ix.apply(m, old, next, changedNames(old, next), !existed)
	if !existed {
		ch.Entered = insertSorted(ch.Entered, GlobalID)
	}
	return ch
}

// Update merges changes into m's attributes (an empty value removes the
// attribute) and reports the groups m entered and left. It reports false if m
// is not in the index.
func (ix *Index[M]) Update(m M, changes Attrs) (Change, bool) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	old, ok := ix.attrs[m]
	if !ok {
		return Change{}, false
	}
	next := old.Clone()
	var names []string
	for k, v := range changes {
		if old[k] == v {
			continue
		}
		names = append(names, k)
		if v == "" {
			delete(next, k)
		} else {
			next[k] = v
		}
	}
	if len(names) == 0 {
		return Change{}, true
	}
	ix.attrs[m] = next
	return ix.apply(m, old, next, names, false), true
}

// Remove deletes m and reports every group it left. It reports false if m was
// not in the index.
func (ix *Index[M]) Remove(m M) (Change, bool) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	old, ok := ix.attrs[m]
	if !ok {
		return Change{}, false
	}
	ch := Change{Left: []string{GlobalID}}
	for k, v := range old {
		ix.removeValue(k, v, m)
		ch.Left = append(ch.Left, AutoID(k, v))
	}
	for _, g := range ix.custom {
		if _, in := g.members[m]; in {
			delete(g.members, m)
			ch.Left = append(ch.Left, g.id)
		}
	}
	delete(ix.attrs, m)
	slices.Sort(ch.Left)
	return ch, true
}

// Attrs returns a copy of m's attributes.
func (ix *Index[M]) Attrs(m M) (Attrs, bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	a, ok := ix.attrs[m]
	if !ok {
		return nil, false
	}
	return a.Clone(), true
}

// GroupsOf returns every group m belongs to, sorted.
func (ix *Index[M]) GroupsOf(m M) []string {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	a, ok := ix.attrs[m]
	if !ok {
		return nil
	}
	ids := []string{GlobalID}
	for k, v := range a {
		ids = append(ids, AutoID(k, v))
	}
	for _, g := range ix.custom {
		if _, in := g.members[m]; in {
			ids = append(ids, g.id)
		}
	}
	slices.Sort(ids)
	return ids
}

// apply moves m between groups after its attributes went from old to next;
// names are the attributes whose values differ. A new member is evaluated
// against every custom group, since "NOT device=tv" matches a member whose
// device is unset. Callers hold the write lock.
func (ix *Index[M]) apply(m M, old, next Attrs, names []string, isNew bool) Change {
	var ch Change
	var touched []*customGroup[M]
	for _, k := range names {
		if v := old[k]; v != "" {
			ix.removeValue(k, v, m)
			ch.Left = append(ch.Left, AutoID(k, v))
		}
		if v := next[k]; v != "" {
			ix.addValue(k, v, m)
			ch.Entered = append(ch.Entered, AutoID(k, v))
		}
		for _, g := range ix.readers[k] {
			if !slices.Contains(touched, g) {
				touched = append(touched, g)
			}
		}
	}
	if isNew {
		touched = touched[:0]
		for _, g := range ix.custom {
			touched = append(touched, g)
		}
	}
	for _, g := range touched {
		_, was := g.members[m]
		now := g.pred.Match(next)
		switch {
		case now && !was:
			g.members[m] = struct{}{}
			ch.Entered = append(ch.Entered, g.id)
		case was && !now:
			delete(g.members, m)
			ch.Left = append(ch.Left, g.id)
		}
	}
	slices.Sort(ch.Entered)
	slices.Sort(ch.Left)
	return ch
}

func (ix *Index[M]) addValue(attr, value string, m M) {
	vals := ix.byValue[attr]
	if vals == nil {
		vals = make(map[string]map[M]struct{})
		ix.byValue[attr] = vals
	}
	set := vals[value]
	if set == nil {
		set = make(map[M]struct{})
		vals[value] = set
	}
	set[m] = struct{}{}
}

func (ix *Index[M]) removeValue(attr, value string, m M) {
	vals := ix.byValue[attr]
	set := vals[value]
	delete(set, m)
	if len(set) == 0 {
		delete(vals, value)
		if len(vals) == 0 {
			delete(ix.byValue, attr)
		}
	}
}

// Define adds or replaces a custom group and returns its member count. The
// initial evaluation only looks at candidates the predicate's equalities
// narrow it to, when it has any.
func (ix *Index[M]) Define(g Group) (int, error) {
	if err := ValidCustomID(g.ID); err != nil {
		return 0, err
	}
	if g.Pred == nil {
		return 0, fmt.Errorf("group %q has no predicate", g.ID)
	}
	if err := g.Pred.Validate(); err != nil {
		return 0, fmt.Errorf("group %q: %w", g.ID, err)
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.undefine(g.ID)
	cg := &customGroup[M]{id: g.ID, pred: g.Pred, attrs: g.Pred.Attrs(), members: make(map[M]struct{})}
	ix.selectLocked(g.Pred, func(m M) { cg.members[m] = struct{}{} })
	ix.custom[g.ID] = cg
	for _, a := range cg.attrs {
		ix.readers[a] = append(ix.readers[a], cg)
	}
	return len(cg.members), nil
}

// Undefine removes a custom group and reports whether it existed.
func (ix *Index[M]) Undefine(id string) bool {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	return ix.undefine(id)
}

func (ix *Index[M]) undefine(id string) bool {
	cg, ok := ix.custom[id]
	if !ok {
		return false
	}
	delete(ix.custom, id)
	for _, a := range cg.attrs {
		ix.readers[a] = slices.DeleteFunc(ix.readers[a], func(g *customGroup[M]) bool { return g == cg })
		if len(ix.readers[a]) == 0 {
			delete(ix.readers, a)
		}
	}
	return true
}

// Group returns the definition of a custom or automatic group.
func (ix *Index[M]) Group(id string) (Group, bool) {
	ix.mu.RLock()
	cg, ok := ix.custom[id]
	ix.mu.RUnlock()
	if ok {
		return Group{ID: cg.id, Pred: cg.pred}, true
	}
	return AutoGroup(id)
}

// CustomGroups returns the custom groups, sorted by id.
func (ix *Index[M]) CustomGroups() []Group {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	out := make([]Group, 0, len(ix.custom))
	for _, cg := range ix.custom {
		out = append(out, Group{ID: cg.id, Pred: cg.pred})
	}
	slices.SortFunc(out, func(a, b Group) int { return cmpString(a.ID, b.ID) })
	return out
}

// AutoCounts returns the member count of every non-empty automatic group,
// global included.
func (ix *Index[M]) AutoCounts() map[string]int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	out := map[string]int{GlobalID: len(ix.attrs)}
	for attr, vals := range ix.byValue {
		for v, set := range vals {
			out[AutoID(attr, v)] = len(set)
		}
	}
	return out
}

// Count returns the number of members of a group (0 for an unknown group).
func (ix *Index[M]) Count(id string) int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	if id == GlobalID {
		return len(ix.attrs)
	}
	if cg, ok := ix.custom[id]; ok {
		return len(cg.members)
	}
	if attr, v, ok := SplitAutoID(id); ok {
		return len(ix.byValue[attr][v])
	}
	return 0
}

// ForEach calls fn for every member of group id until fn returns false, and
// reports whether the group is known (custom or a valid automatic id).
func (ix *Index[M]) ForEach(id string, fn func(M) bool) bool {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	var set map[M]struct{}
	switch cg, ok := ix.custom[id]; {
	case ok:
		set = cg.members
	case id == GlobalID:
		for m := range ix.attrs {
			if !fn(m) {
				break
			}
		}
		return true
	default:
		attr, v, ok := SplitAutoID(id)
		if !ok {
			return false
		}
		set = ix.byValue[attr][v]
	}
	for m := range set {
		if !fn(m) {
			break
		}
	}
	return true
}

// Members returns the members of group id.
func (ix *Index[M]) Members(id string) []M {
	var out []M
	ix.ForEach(id, func(m M) bool { out = append(out, m); return true })
	return out
}

// Select returns the members matching an ad-hoc predicate (a poll aimed at a
// narrower audience, say). Equalities in the predicate narrow the candidates
// through the value index before the predicate is evaluated.
func (ix *Index[M]) Select(p *Predicate) []M {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	var out []M
	ix.selectLocked(p, func(m M) { out = append(out, m) })
	return out
}

func (ix *Index[M]) selectLocked(p *Predicate, fn func(M)) {
	sets, narrowed := ix.candidates(p)
	if !narrowed {
		for m, a := range ix.attrs {
			if p.Match(a) {
				fn(m)
			}
		}
		return
	}
	var seen map[M]struct{}
	if len(sets) > 1 {
		seen = make(map[M]struct{})
	}
	for _, set := range sets {
		for m := range set {
			if seen != nil {
				if _, dup := seen[m]; dup {
					continue
				}
				seen[m] = struct{}{}
			}
			if p.Match(ix.attrs[m]) {
				fn(m)
			}
		}
	}
}

// candidates returns sets whose union contains every member p can match, or
// false when p cannot be narrowed (it is satisfiable without any equality).
func (ix *Index[M]) candidates(p *Predicate) ([]map[M]struct{}, bool) {
	switch p.Op {
	case OpEq:
		return []map[M]struct{}{ix.byValue[p.Attr][p.Values[0]]}, true
	case OpIn:
		sets := make([]map[M]struct{}, 0, len(p.Values))
		for _, v := range p.Values {
			if s := ix.byValue[p.Attr][v]; len(s) > 0 {
				sets = append(sets, s)
			}
		}
		return sets, true
	case OpAnd:
		var best []map[M]struct{}
		bestSize, found := 0, false
		for _, c := range p.Args {
			sets, ok := ix.candidates(c)
			if !ok {
				continue
			}
			size := 0
			for _, s := range sets {
				size += len(s)
			}
			if !found || size < bestSize {
				best, bestSize, found = sets, size, true
			}
		}
		return best, found
	case OpOr:
		var all []map[M]struct{}
		for _, c := range p.Args {
			sets, ok := ix.candidates(c)
			if !ok {
				return nil, false
			}
			all = append(all, sets...)
		}
		return all, true
	}
	return nil, false
}

func changedNames(old, next Attrs) []string {
	var names []string
	for k, v := range next {
		if old[k] != v {
			names = append(names, k)
		}
	}
	for k := range old {
		if _, ok := next[k]; !ok {
			names = append(names, k)
		}
	}
	return names
}

func insertSorted(ids []string, id string) []string {
	i, found := slices.BinarySearch(ids, id)
	if found {
		return ids
	}
	return slices.Insert(ids, i, id)
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
