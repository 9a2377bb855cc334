package groups

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestIndexEnteredLeft(t *testing.T) {
	ix := NewIndex[string]()
	if _, err := ix.Define(Group{ID: "br-mobile", Pred: And(Eq("country", "BR"), Eq("device", "mobile"))}); err != nil {
		t.Fatal(err)
	}
	if _, err := ix.Define(Group{ID: "not-tv", Pred: Not(Eq("device", "tv"))}); err != nil {
		t.Fatal(err)
	}
	ch := ix.Add("a", Attrs{"conn": "c1", "country": "BR"})
	wantChange(t, "add", ch, []string{"conn:c1", "country:BR", "global", "not-tv"}, nil)

	ch, ok := ix.Update("a", Attrs{"device": "mobile", "stream": "cup-final"})
	if !ok {
		t.Fatal("update of a known member failed")
	}
	wantChange(t, "update", ch, []string{"br-mobile", "device:mobile", "stream:cup-final"}, nil)

	ch, _ = ix.Update("a", Attrs{"device": "tv", "stream": ""})
	wantChange(t, "device tv", ch, []string{"device:tv"}, []string{"br-mobile", "device:mobile", "not-tv", "stream:cup-final"})

	ch, _ = ix.Update("a", Attrs{"device": "tv"})
	wantChange(t, "no-op", ch, nil, nil)

	if _, ok := ix.Update("nobody", Attrs{"device": "tv"}); ok {
		t.Fatal("update of an unknown member succeeded")
	}
	if got := ix.GroupsOf("a"); !slices.Equal(got, []string{"conn:c1", "country:BR", "device:tv", "global"}) {
		t.Fatalf("GroupsOf = %v", got)
	}
	ch, _ = ix.Remove("a")
	wantChange(t, "remove", ch, nil, []string{"conn:c1", "country:BR", "device:tv", "global"})
	if ix.Len() != 0 || ix.Count("global") != 0 || ix.Count("country:BR") != 0 {
		t.Fatal("index not empty after removing its only member")
	}
	if _, ok := ix.Remove("a"); ok {
		t.Fatal("second remove succeeded")
	}
}

func wantChange(t *testing.T, what string, ch Change, entered, left []string) {
	t.Helper()
	if !slices.Equal(ch.Entered, entered) || !slices.Equal(ch.Left, left) {
		t.Fatalf("%s: entered %v left %v, want entered %v left %v", what, ch.Entered, ch.Left, entered, left)
	}
}

func TestIndexGroupLookups(t *testing.T) {
	ix := NewIndex[int]()
	ix.Add(1, Attrs{"stream": "a", "country": "BR"})
	ix.Add(2, Attrs{"stream": "a", "country": "AR"})
	ix.Add(3, Attrs{"stream": "b"})
	if got := sorted(ix.Members("stream:a")); !slices.Equal(got, []int{1, 2}) {
		t.Fatalf("stream:a = %v", got)
	}
	if got := sorted(ix.Members("global")); !slices.Equal(got, []int{1, 2, 3}) {
		t.Fatalf("global = %v", got)
	}
	if ix.ForEach("colour:red", func(int) bool { return true }) {
		t.Fatal("unknown attribute accepted as a group")
	}
	if ix.ForEach("nope", func(int) bool { return true }) {
		t.Fatal("undefined custom group reported as known")
	}
	counts := ix.AutoCounts()
	if counts["global"] != 3 || counts["stream:a"] != 2 || counts["country:AR"] != 1 {
		t.Fatalf("AutoCounts = %v", counts)
	}
	if g, ok := ix.Group("stream:a"); !ok || g.Pred.String() != "stream=a" {
		t.Fatalf("Group(stream:a) = %v %v", g, ok)
	}
	if _, err := ix.Define(Group{ID: "global", Pred: True()}); err == nil {
		t.Fatal("custom group named global accepted")
	}
	if _, err := ix.Define(Group{ID: "x:y", Pred: True()}); err == nil {
		t.Fatal("custom group id with ':' accepted")
	}
	n, err := ix.Define(Group{ID: "everyone", Pred: True()})
	if err != nil || n != 3 {
		t.Fatalf("Define(TRUE) = %d, %v", n, err)
	}
	ix.Add(4, Attrs{})
	if ix.Count("everyone") != 4 {
		t.Fatalf("everyone has %d members", ix.Count("everyone"))
	}
	if !ix.Undefine("everyone") || ix.Undefine("everyone") {
		t.Fatal("Undefine did not report existence correctly")
	}
	if ix.Count("everyone") != 0 {
		t.Fatal("undefined group still counts members")
	}
}

func sorted(s []int) []int { slices.Sort(s); return s }

// TestIndexMatchesBruteForce drives an index with random profiles, attribute
// changes, removals and group definitions, and after every step compares the
// membership of every group (custom and automatic), Select and the reported
// changes with a brute-force evaluation of the predicates.
func TestIndexMatchesBruteForce(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	ix := NewIndex[int]()
	truth := map[int]Attrs{}
	var defined []Group
	attrNames := []string{"country", "os", "device", "stream", "x-tier"}
	values := []string{"BR", "AR", "ios", "tv", "cup-final", "and", "São Paulo", `q"uote`}
	randomAttrs := func(n int) Attrs {
		a := Attrs{}
		for i := 0; i < n; i++ {
			a[attrNames[r.IntN(len(attrNames))]] = values[r.IntN(len(values))]
		}
		return a
	}
	groupsOf := func(a Attrs) []string {
		ids := []string{GlobalID}
		for k, v := range a {
			if v != "" {
				ids = append(ids, AutoID(k, v))
			}
		}
		for _, g := range defined {
			if g.Pred.Match(a) {
				ids = append(ids, g.ID)
			}
		}
		slices.Sort(ids)
		return ids
	}
	diff := func(before, after []string) Change {
		var ch Change
		for _, id := range after {
			if !slices.Contains(before, id) {
				ch.Entered = append(ch.Entered, id)
			}
		}
		for _, id := range before {
			if !slices.Contains(after, id) {
				ch.Left = append(ch.Left, id)
			}
		}
		return ch
	}
	for step := 0; step < 3000; step++ {
		m := r.IntN(60)
		switch op := r.IntN(10); {
		case op < 3:
			a := randomAttrs(r.IntN(4))
			before := []string(nil)
			if old, ok := truth[m]; ok {
				before = groupsOf(old)
			}
			ch := ix.Add(m, a)
			clean := Attrs{}
			for k, v := range a {
				clean[k] = v
			}
			truth[m] = clean
			want := diff(before, groupsOf(clean))
			wantChange(t, fmt.Sprintf("step %d add", step), ch, want.Entered, want.Left)
		case op < 7:
			old, ok := truth[m]
			changes := randomAttrs(1 + r.IntN(2))
			if r.IntN(4) == 0 {
				changes[attrNames[r.IntN(len(attrNames))]] = ""
			}
			ch, got := ix.Update(m, changes)
			if got != ok {
				t.Fatalf("step %d: Update reported %v for member present=%v", step, got, ok)
			}
			if !ok {
				continue
			}
			next := old.Clone()
			for k, v := range changes {
				if v == "" {
					delete(next, k)
				} else {
					next[k] = v
				}
			}
			truth[m] = next
			want := diff(groupsOf(old), groupsOf(next))
			wantChange(t, fmt.Sprintf("step %d update", step), ch, want.Entered, want.Left)
		case op < 8:
			old, ok := truth[m]
			ch, got := ix.Remove(m)
			if got != ok {
				t.Fatalf("step %d: Remove reported %v for member present=%v", step, got, ok)
			}
			if ok {
				delete(truth, m)
				wantChange(t, fmt.Sprintf("step %d remove", step), ch, nil, groupsOf(old))
			}
		case op < 9:
			g := Group{ID: fmt.Sprintf("g%d", r.IntN(8)), Pred: randomPredicate(r, 3)}
			if _, err := ix.Define(g); err != nil {
				t.Fatal(err)
			}
			defined = slices.DeleteFunc(defined, func(d Group) bool { return d.ID == g.ID })
			defined = append(defined, g)
		default:
			id := fmt.Sprintf("g%d", r.IntN(8))
			was := slices.ContainsFunc(defined, func(d Group) bool { return d.ID == id })
			if ix.Undefine(id) != was {
				t.Fatalf("step %d: Undefine(%s) disagrees with %v", step, id, was)
			}
			defined = slices.DeleteFunc(defined, func(d Group) bool { return d.ID == id })
		}
		if step%10 != 0 {
			continue
		}
		// Compare every group's membership with brute force.
		want := map[string][]int{}
		for mem, a := range truth {
			for _, id := range groupsOf(a) {
				want[id] = append(want[id], mem)
			}
		}
		for _, g := range defined {
			if _, ok := want[g.ID]; !ok {
				want[g.ID] = nil
			}
		}
		for id, members := range want {
			slices.Sort(members)
			got := sorted(ix.Members(id))
			if !slices.Equal(got, members) || ix.Count(id) != len(members) {
				t.Fatalf("step %d: group %s has %v (count %d), brute force says %v", step, id, got, ix.Count(id), members)
			}
		}
		p := randomPredicate(r, 3)
		var brute []int
		for mem, a := range truth {
			if p.Match(a) {
				brute = append(brute, mem)
			}
		}
		slices.Sort(brute)
		if got := sorted(ix.Select(p)); !slices.Equal(got, brute) {
			t.Fatalf("step %d: Select(%s) = %v, brute force %v", step, p, got, brute)
		}
	}
}

func BenchmarkIndexUpdate(b *testing.B) {
	ix := NewIndex[int]()
	for i := 0; i < 100; i++ {
		if _, err := ix.Define(Group{ID: fmt.Sprintf("g%d", i), Pred: And(Eq("country", fmt.Sprint(i%10)), Not(Eq("device", "tv")))}); err != nil {
			b.Fatal(err)
		}
	}
	for i := 0; i < 10000; i++ {
		ix.Add(i, Attrs{"country": fmt.Sprint(i % 10), "conn": "c1"})
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ix.Update(i%10000, Attrs{"stream": fmt.Sprint("s", i%3)})
	}
}
