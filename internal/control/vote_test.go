package control

import (
	"testing"
)

func TestParseVote(t *testing.T) {
	ok := map[string]VoteRef{
		`{"t":"vote","poll":"p1","choice":2,"id":"v1"}`:                          {Poll: []byte("p1"), ID: []byte("v1"), Choice: 2},
		" {\n\t\"id\" : \"v\" , \"choice\":0,\"poll\":\"p\",\"t\":\"vote\"}\r\n": {Poll: []byte("p"), ID: []byte("v")},
		`{"t":"vote","poll":"p","id":"v"}`:                                       {Poll: []byte("p"), ID: []byte("v")}, // choice defaults to 0, as encoding/json leaves it
		`{"t":"vote","poll":"p","choice":-0,"id":"v","future":[]}`:               {},                                   // a nested value: not plain
		`{"t":"vote","poll":"p","choice":1,"id":"v","x":-1.5e+3,"y":true}`:       {Poll: []byte("p"), ID: []byte("v"), Choice: 1},
		`{"t":"telemetry","t":"vote","poll":"p","choice":3,"id":"v"}`:            {Poll: []byte("p"), ID: []byte("v"), Choice: 3}, // the last t counts
	}
	for in, want := range ok {
		got, parsed := ParseVote([]byte(in))
		if want.Poll == nil {
			if parsed {
				t.Errorf("%q parsed in place", in)
			}
			continue
		}
		if !parsed || string(got.Poll) != string(want.Poll) || string(got.ID) != string(want.ID) || got.Choice != want.Choice {
			t.Errorf("%q: %+v %v, want %+v", in, got, parsed, want)
		}
	}
	// Left to DecodeClient: it refuses some and reads others.
	for _, in := range []string{
		`{"t":"vote","poll":"p","choice":1.0,"id":"v"}`,
		`{"t":"vote","poll":"p","choice":1e2,"id":"v"}`,
		`{"t":"vote","poll":"p","choice":-1,"id":"v"}`,
		`{"t":"vote","poll":"p","choice":01,"id":"v"}`,
		`{"t":"vote","poll":"p","choice":"1","id":"v"}`,
		`{"t":"vote","Poll":"p","choice":1,"id":"v"}`,
		`{"t":"vote","poll":"p\u0031","choice":1,"id":"v"}`,
		`{"t":"vote","poll":"pé","choice":1,"id":"v"}`,
		`{"t":"vote","poll":null,"choice":1,"id":"v"}`,
		`{"t":"vote","poll":"","choice":1,"id":"v"}`,
		`{"t":"vote","poll":"p","choice":1,"id":"v"} x`,
		`{"t":"vote","poll":"p","choice":1,"id":"v",}`,
		`{"t":"watch","stream":"demo"}`,
		`{"t":"vote","poll":"p","choice":1,"id":"v","x":01}`,
		`{"t":"vote","poll":"p","choice":1,"id":"v","x":1.}`,
		`{}`, `{`, ``,
	} {
		if v, parsed := ParseVote([]byte(in)); parsed {
			t.Errorf("%q parsed in place as %+v", in, v)
		}
	}
}

// FuzzParseVote: whatever ParseVote accepts, encoding/json accepts as the
// same vote.
func FuzzParseVote(f *testing.F) {
	for _, s := range []string{
		`{"t":"vote","poll":"p1","choice":2,"id":"v1"}`,
		`{"t":"vote","poll":"p","choice":1,"id":"v","x":-1.5e+3,"y":true,"z":false}`,
		`{"T":"vote","poll":"p","choice":1,"id":"v"}`,
		`{"t":"vote","poll":"p","choice":123456789012345678,"id":"v"}`,
		`{"t":"vote","t":"x","poll":"p","choice":1,"id":"v"}`,
		` {"id":"v","choice":0,"poll":"p","t":"vote"} `,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		v, ok := ParseVote(frame)
		if !ok {
			return
		}
		m, err := decodeClient(frame)
		if err != nil || m.Vote == nil {
			t.Fatalf("ParseVote accepted %q, encoding/json: %+v %v", frame, m, err)
		}
		if m.Vote.Poll != string(v.Poll) || m.Vote.ID != string(v.ID) || m.Vote.Choice != v.Choice {
			t.Fatalf("%q: in place %+v, encoding/json %+v", frame, v, *m.Vote)
		}
	})
}

// TestAppendAck: the fast ack encoder writes what Encode writes.
func TestAppendAck(t *testing.T) {
	for _, id := range []string{"", "v-1", "17.3", `a"b`, `back\slash`, "tab\there", "é", "<script>", "a&b", "\u2028", "\xff"} {
		want := Encode(Ack{ID: id})
		if got := AppendAck([]byte("keep"), []byte(id)); string(got) != "keep"+string(want) {
			t.Errorf("%q: %s, want %s", id, got[4:], want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = AppendAck(make([]byte, 0, 64), []byte("12345.67")) }); n > 1 {
		t.Errorf("%v allocations for a plain id", n)
	}
}
