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
// attributes change. Automatic groups are kept as attribute → value →
// members; a custom group keeps its own member set and is re-evaluated for a
// member only when one of the attributes its predicate reads changes. So
// finding a group's members never scans all profiles.
//
// It is built to be small per member, since a connection server holds
// hundreds of thousands: each member has a dense slot; its attributes are a
// short slice of (attribute, value) ids with values interned and shared by
// every member holding them; each value keeps its members as a slice of
// slots, and each member remembers its position there so leaving is O(1).
//
// An Index is safe for concurrent use. ForEach holds a read lock while it
// calls its function, which must therefore not call back into the Index.
type Index[M comparable] struct {
	mu     sync.RWMutex
	slots  map[M]int32 // member → slot
	member []M         // slot → member
	pairs  [][]pair    // slot → its attributes; nil for a free slot
	free   []int32     // free slots

	attrID   map[string]uint16 // interned attribute names
	attrName []string
	values   []*attrValues // by attribute id

	custom  map[string]*customGroup
	readers map[string][]*customGroup // attr → custom groups whose predicate reads it
}

// pair is one attribute of a member: its value, and where the member sits
// in that value's member list.
type pair struct {
	attr uint16
	val  uint32
	pos  uint32
}

// attrValues interns the values of one attribute and lists each value's
// members. Ids of values nobody holds any more are reused.
type attrValues struct {
	id   map[string]uint32
	name []string
	list [][]int32 // value id → member slots, unordered
	free []uint32
}

type customGroup struct {
	id      string
	pred    *Predicate
	attrs   []string
	members map[int32]struct{}
}

// NewIndex returns an empty index.
func NewIndex[M comparable]() *Index[M] {
	return &Index[M]{
		slots:   make(map[M]int32),
		attrID:  make(map[string]uint16),
		custom:  make(map[string]*customGroup),
		readers: make(map[string][]*customGroup),
	}
}

// Len returns the number of members.
func (ix *Index[M]) Len() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return len(ix.slots)
}

// Add inserts m with attrs (replacing any attributes it had) and reports the
// groups it entered and left, global included.
func (ix *Index[M]) Add(m M, attrs Attrs) Change {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	slot, existed := ix.slots[m]
	old := Attrs{}
	if existed {
		old = ix.attrsOf(slot)
	} else {
		slot = ix.alloc(m)
	}
	next := make(Attrs, len(attrs))
	for k, v := range attrs {
		if v != "" {
			next[k] = v
		}
	}
	ch := ix.apply(slot, old, next, changedNames(old, next), !existed)
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
	slot, ok := ix.slots[m]
	if !ok {
		return Change{}, false
	}
	old := ix.attrsOf(slot)
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
	return ix.apply(slot, old, next, names, false), true
}

// Remove deletes m and reports every group it left. It reports false if m was
// not in the index.
func (ix *Index[M]) Remove(m M) (Change, bool) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	slot, ok := ix.slots[m]
	if !ok {
		return Change{}, false
	}
	ch := Change{Left: []string{GlobalID}}
	for len(ix.pairs[slot]) > 0 {
		p := ix.pairs[slot][0]
		ch.Left = append(ch.Left, AutoID(ix.attrName[p.attr], ix.values[p.attr].name[p.val]))
		ix.removeValue(slot, p.attr)
	}
	for _, g := range ix.custom {
		if _, in := g.members[slot]; in {
			delete(g.members, slot)
			ch.Left = append(ch.Left, g.id)
		}
	}
	delete(ix.slots, m)
	var zero M
	ix.member[slot], ix.pairs[slot] = zero, nil
	ix.free = append(ix.free, slot)
	slices.Sort(ch.Left)
	return ch, true
}

// Attrs returns a copy of m's attributes.
func (ix *Index[M]) Attrs(m M) (Attrs, bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	slot, ok := ix.slots[m]
	if !ok {
		return nil, false
	}
	return ix.attrsOf(slot), true
}

// GroupsOf returns every group m belongs to, sorted.
func (ix *Index[M]) GroupsOf(m M) []string {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	slot, ok := ix.slots[m]
	if !ok {
		return nil
	}
	ids := []string{GlobalID}
	for _, p := range ix.pairs[slot] {
		ids = append(ids, AutoID(ix.attrName[p.attr], ix.values[p.attr].name[p.val]))
	}
	for _, g := range ix.custom {
		if _, in := g.members[slot]; in {
			ids = append(ids, g.id)
		}
	}
	slices.Sort(ids)
	return ids
}

func (ix *Index[M]) alloc(m M) int32 {
	var slot int32
	if n := len(ix.free); n > 0 {
		slot = ix.free[n-1]
		ix.free = ix.free[:n-1]
		ix.member[slot] = m
	} else {
		slot = int32(len(ix.member))
		ix.member = append(ix.member, m)
		ix.pairs = append(ix.pairs, nil)
	}
	ix.pairs[slot] = []pair{}
	ix.slots[m] = slot
	return slot
}

// attrsOf builds the attribute map of a slot. Callers hold a lock.
func (ix *Index[M]) attrsOf(slot int32) Attrs {
	a := make(Attrs, len(ix.pairs[slot]))
	for _, p := range ix.pairs[slot] {
		a[ix.attrName[p.attr]] = ix.values[p.attr].name[p.val]
	}
	return a
}

// slotAttrs reads a slot's attributes for predicate evaluation.
type slotAttrs[M comparable] struct {
	ix   *Index[M]
	slot int32
}

func (s slotAttrs[M]) Get(attr string) string {
	id, ok := s.ix.attrID[attr]
	if !ok {
		return ""
	}
	for _, p := range s.ix.pairs[s.slot] {
		if p.attr == id {
			return s.ix.values[id].name[p.val]
		}
	}
	return ""
}

func (ix *Index[M]) matches(p *Predicate, slot int32) bool {
	return match(p, slotAttrs[M]{ix, slot})
}

// apply moves a member between groups after its attributes went from old to
// next; names are the attributes whose values differ. A new member is
// evaluated against every custom group, since "NOT device=tv" matches a
// member whose device is unset. Callers hold the write lock.
func (ix *Index[M]) apply(slot int32, old, next Attrs, names []string, isNew bool) Change {
	var ch Change
	var touched []*customGroup
	for _, k := range names {
		if v := old[k]; v != "" {
			ix.removeValue(slot, ix.attrID[k])
			ch.Left = append(ch.Left, AutoID(k, v))
		}
		if v := next[k]; v != "" {
			ix.addValue(slot, k, v)
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
		_, was := g.members[slot]
		now := ix.matches(g.pred, slot)
		switch {
		case now && !was:
			g.members[slot] = struct{}{}
			ch.Entered = append(ch.Entered, g.id)
		case was && !now:
			delete(g.members, slot)
			ch.Left = append(ch.Left, g.id)
		}
	}
	slices.Sort(ch.Entered)
	slices.Sort(ch.Left)
	return ch
}

func (ix *Index[M]) addValue(slot int32, attr, value string) {
	aid, ok := ix.attrID[attr]
	if !ok {
		aid = uint16(len(ix.attrName))
		ix.attrID[attr] = aid
		ix.attrName = append(ix.attrName, attr)
		ix.values = append(ix.values, &attrValues{id: make(map[string]uint32)})
	}
	av := ix.values[aid]
	vid, ok := av.id[value]
	if !ok {
		if n := len(av.free); n > 0 {
			vid = av.free[n-1]
			av.free = av.free[:n-1]
			av.name[vid] = value
		} else {
			vid = uint32(len(av.name))
			av.name = append(av.name, value)
			av.list = append(av.list, nil)
		}
		av.id[value] = vid
	}
	ix.pairs[slot] = append(ix.pairs[slot], pair{attr: aid, val: vid, pos: uint32(len(av.list[vid]))})
	av.list[vid] = append(av.list[vid], slot)
}

// removeValue takes a slot out of its value's list for one attribute.
func (ix *Index[M]) removeValue(slot int32, aid uint16) {
	ps := ix.pairs[slot]
	i := slices.IndexFunc(ps, func(p pair) bool { return p.attr == aid })
	if i < 0 {
		return
	}
	p := ps[i]
	av := ix.values[aid]
	list := av.list[p.val]
	last := len(list) - 1
	if moved := list[last]; int(p.pos) != last {
		list[p.pos] = moved
		for j := range ix.pairs[moved] {
			if ix.pairs[moved][j].attr == aid {
				ix.pairs[moved][j].pos = p.pos
				break
			}
		}
	}
	list = list[:last]
	if len(list) == 0 {
		delete(av.id, av.name[p.val])
		av.name[p.val], list = "", nil
		av.free = append(av.free, p.val)
	}
	av.list[p.val] = list
	ps[i] = ps[len(ps)-1]
	ix.pairs[slot] = ps[:len(ps)-1]
}

// members returns the slot list of an automatic group, nil if empty or
// unknown. Callers hold a lock.
func (ix *Index[M]) valueMembers(attr, value string) []int32 {
	aid, ok := ix.attrID[attr]
	if !ok {
		return nil
	}
	av := ix.values[aid]
	vid, ok := av.id[value]
	if !ok {
		return nil
	}
	return av.list[vid]
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
	cg := &customGroup{id: g.ID, pred: g.Pred, attrs: g.Pred.Attrs(), members: make(map[int32]struct{})}
	ix.selectLocked(g.Pred, func(slot int32) { cg.members[slot] = struct{}{} })
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
		ix.readers[a] = slices.DeleteFunc(ix.readers[a], func(g *customGroup) bool { return g == cg })
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
	out := map[string]int{GlobalID: len(ix.slots)}
	for aid, av := range ix.values {
		for vid, list := range av.list {
			if len(list) > 0 {
				out[AutoID(ix.attrName[aid], av.name[vid])] = len(list)
			}
		}
	}
	return out
}

// Count returns the number of members of a group (0 for an unknown group).
func (ix *Index[M]) Count(id string) int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	if id == GlobalID {
		return len(ix.slots)
	}
	if cg, ok := ix.custom[id]; ok {
		return len(cg.members)
	}
	if attr, v, ok := SplitAutoID(id); ok {
		return len(ix.valueMembers(attr, v))
	}
	return 0
}

// ForEach calls fn for every member of group id until fn returns false, and
// reports whether the group is known (custom or a valid automatic id).
func (ix *Index[M]) ForEach(id string, fn func(M) bool) bool {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	switch cg, ok := ix.custom[id]; {
	case ok:
		for slot := range cg.members {
			if !fn(ix.member[slot]) {
				break
			}
		}
	case id == GlobalID:
		for slot, ps := range ix.pairs {
			if ps != nil && !fn(ix.member[slot]) {
				break
			}
		}
	default:
		attr, v, ok := SplitAutoID(id)
		if !ok {
			return false
		}
		for _, slot := range ix.valueMembers(attr, v) {
			if !fn(ix.member[slot]) {
				break
			}
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
	ix.selectLocked(p, func(slot int32) { out = append(out, ix.member[slot]) })
	return out
}

func (ix *Index[M]) selectLocked(p *Predicate, fn func(int32)) {
	lists, narrowed := ix.candidates(p)
	if !narrowed {
		for slot, ps := range ix.pairs {
			if ps != nil && ix.matches(p, int32(slot)) {
				fn(int32(slot))
			}
		}
		return
	}
	var seen map[int32]struct{}
	if len(lists) > 1 {
		seen = make(map[int32]struct{})
	}
	for _, list := range lists {
		for _, slot := range list {
			if seen != nil {
				if _, dup := seen[slot]; dup {
					continue
				}
				seen[slot] = struct{}{}
			}
			if ix.matches(p, slot) {
				fn(slot)
			}
		}
	}
}

// candidates returns member lists whose union contains every member p can
// match, or false when p cannot be narrowed (it is satisfiable without any
// equality).
func (ix *Index[M]) candidates(p *Predicate) ([][]int32, bool) {
	switch p.Op {
	case OpEq:
		return [][]int32{ix.valueMembers(p.Attr, p.Values[0])}, true
	case OpIn:
		lists := make([][]int32, 0, len(p.Values))
		for _, v := range p.Values {
			if l := ix.valueMembers(p.Attr, v); len(l) > 0 {
				lists = append(lists, l)
			}
		}
		return lists, true
	case OpAnd:
		var best [][]int32
		bestSize, found := 0, false
		for _, c := range p.Args {
			lists, ok := ix.candidates(c)
			if !ok {
				continue
			}
			size := 0
			for _, l := range lists {
				size += len(l)
			}
			if !found || size < bestSize {
				best, bestSize, found = lists, size, true
			}
		}
		return best, found
	case OpOr:
		var all [][]int32
		for _, c := range p.Args {
			lists, ok := ix.candidates(c)
			if !ok {
				return nil, false
			}
			all = append(all, lists...)
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
