package groups

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestMirrorRoundTrip(t *testing.T) {
	msgs := []Mirror{
		LinkOpened("c1", "L1", "u1", []string{"demo"}, Facts{IP: "192.0.2.1", UserAgent: "Mozilla/5.0", ClientHints: map[string]string{"sec-ch-ua-mobile": "?0"},
			AcceptLanguage: "pt-BR", Hello: json.RawMessage(`{"t":"hello","lang":"pt-BR"}`), OpenedAt: time.Unix(1700000000, 0).UTC()}, Attrs{"conn": "c1"}),
		LinkClosed("c1", "L1", 1001, "going away"),
		ClientMessage("c1", "L1", "u1", "watch", []byte(`{"t":"watch","stream":"demo"}`)),
		SetAttrs("L1", Attrs{"stream": "demo", "country": ""}),
		DefineGroup(Group{ID: "br", Pred: Eq("country", "BR")}),
		UndefineGroup("br"),
		SendLink("L1", []byte(`{"t":"notice","text":"hi"}`), true),
		SendGroup("stream:demo", []byte(`{"t":"stream-status","g":"stream:demo","off":1,"ep":"x","stream":"demo","state":"live"}`), false),
		CloseLink("L1", 4000, "bye"),
	}
	for _, m := range msgs {
		b := m.Encode()
		got, err := DecodeMirror(b)
		if err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if string(got.Encode()) != string(b) {
			t.Fatalf("round trip changed\n%s\n%s", b, got.Encode())
		}
	}
	// The payload travels verbatim, not re-encoded as a string.
	b := msgs[7].Encode()
	if !strings.Contains(string(b), `"payload":{"t":"stream-status"`) {
		t.Fatalf("payload not embedded verbatim: %s", b)
	}
}

func TestMirrorRejects(t *testing.T) {
	cases := map[string]string{
		`{}`:                        "without op",
		`{"op":"nope"}`:             "unknown op",
		`{"op":"open","conn":"c1"}`: "without link",
		`{"op":"attrs","link":"L","attrs":{"colour":"red"}}`: "unknown attribute",
		`{"op":"define","group":"g","pred":{"eq":["x"]}}`:    "eq takes",
		`{"op":"define","group":"a:b","pred":true}`:          "only letters",
		`{"op":"publish","group":"g"}`:                       "without payload",
		`not json`:                                           "mirror:",
	}
	for in, want := range cases {
		_, err := DecodeMirror([]byte(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", in, err, want)
		}
	}
}

func TestAutoGroups(t *testing.T) {
	g, ok := AutoGroup("stream:cup-final")
	if !ok || !g.Pred.Equal(Eq("stream", "cup-final")) {
		t.Fatalf("stream:cup-final → %v %v", g, ok)
	}
	if g, ok := AutoGroup("global"); !ok || g.Pred.Op != OpTrue {
		t.Fatal("global is not TRUE")
	}
	for _, bad := range []string{"colour:red", "country:", "country", "", "x-:a"} {
		if _, ok := AutoGroup(bad); ok {
			t.Errorf("%q accepted as an automatic group", bad)
		}
	}
	if _, ok := AutoGroup("x-tier:gold"); !ok {
		t.Error("x-tier:gold rejected")
	}
}
