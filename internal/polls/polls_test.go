package polls

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/backchannel/backchannel/groups"
)

func validStream(s string) bool { return s != "" && !strings.ContainsAny(s, " /") }

func TestNewValidation(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	long := strings.Repeat("é", 281)
	cases := []struct {
		spec   Spec
		fields []string
	}{
		{Spec{Stream: "cup", Question: "Who wins?", Choices: []string{"A", "B"}}, nil},
		{Spec{Stream: "cup", Question: strings.Repeat("é", 280), Choices: []string{"A", "B"}, DurationMS: 10_000}, nil},
		{Spec{Stream: "", Question: "", Choices: nil}, []string{"stream", "question", "choices"}},
		{Spec{Stream: "cup", Question: long, Choices: []string{"A"}}, []string{"question", "choices"}},
		{Spec{Stream: "cup", Question: "q", Choices: []string{"A", "B", "C", "D", "E", "F", "G", "H", "I", "J", "K"}}, []string{"choices"}},
		{Spec{Stream: "cup", Question: "q", Choices: []string{"A", " ", "a"}}, []string{"choices[1]", "choices[2]"}},
		{Spec{Stream: "cup", Question: "q", Choices: []string{"A", "B"}, DurationMS: 10}, []string{"duration_ms"}},
		{Spec{Stream: "cup", Question: "q", Choices: []string{"A", "B"}, DurationMS: -5000}, []string{"duration_ms"}},
		{Spec{Stream: "bad name", Question: "q", Choices: []string{"A", "B"}, Where: &groups.Predicate{Op: groups.OpEq, Attr: "nope"}}, []string{"stream", "where"}},
	}
	for i, c := range cases {
		p, err := New(c.spec, now, validStream)
		if c.fields == nil {
			if err != nil || p.State != StateOpen || p.Group != "stream:cup" || p.ID == "" {
				t.Errorf("%d: %+v %v", i, p, err)
			}
			continue
		}
		var ve *ValidationError
		if !errors.As(err, &ve) {
			t.Errorf("%d: err %v", i, err)
			continue
		}
		var got []string
		for _, f := range ve.Fields {
			got = append(got, f.Name)
		}
		if strings.Join(got, ",") != strings.Join(c.fields, ",") {
			t.Errorf("%d: fields %v, want %v (%v)", i, got, c.fields, err)
		}
	}
}

func TestPollTargetAndTiming(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p, err := New(Spec{Stream: "cup", Question: "q", Choices: []string{"a", "b"}, DurationMS: 10_000, Where: groups.Eq("country", "BR")}, now, validStream)
	if err != nil {
		t.Fatal(err)
	}
	if p.Group != GroupIDPrefix+p.ID || groups.ValidCustomID(p.Group) != nil {
		t.Fatalf("group %q", p.Group)
	}
	if !p.Audience().Match(groups.Attrs{"stream": "cup", "country": "BR"}) || p.Audience().Match(groups.Attrs{"stream": "cup", "country": "DE"}) ||
		p.Audience().Match(groups.Attrs{"stream": "other", "country": "BR"}) {
		t.Fatal("audience")
	}
	if !p.Open(now.Add(9*time.Second)) || p.Open(now.Add(10*time.Second)) {
		t.Fatal("timing")
	}
	p.State = StateClosed
	if p.Open(now) {
		t.Fatal("closed poll open")
	}
}

func TestTallyOneVotePerUser(t *testing.T) {
	tl := NewTally(3, 2)
	br := groups.Attrs{"country": "BR", "device": "mobile"}
	de := groups.Attrs{"country": "DE", "device": "desktop"}
	if tl.Apply("u1", 0, br) != Counted || tl.Apply("u2", 0, de) != Counted || tl.Apply("u3", 2, de) != Counted {
		t.Fatal("first votes")
	}
	_, _, v0 := tl.Counts()
	if tl.Apply("u1", 0, br) != Unchanged {
		t.Fatal("resend")
	}
	if _, _, v := tl.Counts(); v != v0 {
		t.Fatal("a resend changed the version")
	}
	// u2 moves from 0 to 1; the breakdown moves with it, under the
	// attributes of the new vote.
	if tl.Apply("u2", 1, groups.Attrs{"country": "DE", "device": "mobile"}) != Changed {
		t.Fatal("change")
	}
	counts, total, _ := tl.Counts()
	if total != 3 || counts[0] != 1 || counts[1] != 1 || counts[2] != 1 || tl.Voters() != 3 {
		t.Fatalf("counts %v total %d", counts, total)
	}
	bc, _ := tl.Breakdown("country")
	if len(bc) != 2 || bc["BR"][0] != 1 || bc["DE"][0] != 0 || bc["DE"][1] != 1 || bc["DE"][2] != 1 {
		t.Fatalf("by country %v", bc)
	}
	bd, _ := tl.Breakdown("device")
	if bd["mobile"][0] != 1 || bd["mobile"][1] != 1 || bd["desktop"][2] != 1 || bd["desktop"][0] != 0 {
		t.Fatalf("by device %v", bd)
	}
	if _, ok := tl.Breakdown("stream"); ok {
		t.Fatal("stream is not a breakdown dimension")
	}
	if c, ok := tl.Choice(VoterOf("u2")); !ok || c != 1 {
		t.Fatal("choice")
	}
	n := 0
	tl.Each(func(u string, c int, a groups.Attrs) {
		n++
		if u == "u1" && (c != 0 || a["country"] != "BR" || a["os"] != "") {
			t.Errorf("each %s %d %v", u, c, a)
		}
	})
	if n != 3 {
		t.Fatal(n)
	}
}

func TestDimsAttrsAreSharedAndExact(t *testing.T) {
	a := groups.Attrs{groups.AttrCountry: "BR", groups.AttrDevice: "mobile", groups.AttrStream: "cup"}
	b := groups.Attrs{groups.AttrCountry: "BR", groups.AttrDevice: "mobile", groups.AttrStream: "other"}
	da, db := DimsOf(a).Attrs(), DimsOf(b).Attrs()
	if len(da) != 2 || da[groups.AttrCountry] != "BR" || da[groups.AttrDevice] != "mobile" {
		t.Fatalf("dims attrs %v: want country and device only (stream is no dimension)", da)
	}
	if reflect.ValueOf(da).UnsafePointer() != reflect.ValueOf(db).UnsafePointer() {
		t.Fatal("two voters with the same dimensions got two maps")
	}
	dc := DimsOf(groups.Attrs{groups.AttrCountry: "DE"}).Attrs()
	if len(dc) != 1 || dc[groups.AttrCountry] != "DE" {
		t.Fatalf("other dims %v", dc)
	}
}
