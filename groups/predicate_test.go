package groups

import (
	"math/rand/v2"
	"strings"
	"testing"
)

const designExampleJSON = `{"and":[{"eq":["country","BR"]},{"in":["os",["ios","android"]]},{"not":{"eq":["device","tv"]}}]}`

func TestDesignExampleBothForms(t *testing.T) {
	fromJSON, err := ParsePredicateJSON([]byte(designExampleJSON))
	if err != nil {
		t.Fatal(err)
	}
	fromText, err := ParsePredicateText("country=BR AND os IN (ios,android) AND NOT device=tv")
	if err != nil {
		t.Fatal(err)
	}
	if !fromJSON.Equal(fromText) {
		t.Fatalf("json %s and text %s differ", fromJSON, fromText)
	}
	if got := fromJSON.JSON(); got != designExampleJSON {
		t.Fatalf("canonical JSON\n got %s\nwant %s", got, designExampleJSON)
	}
	if got := fromJSON.String(); got != "country=BR AND os IN (ios,android) AND device!=tv" {
		t.Fatalf("text %q", got)
	}
	cases := []struct {
		attrs Attrs
		want  bool
	}{
		{Attrs{"country": "BR", "os": "ios", "device": "mobile"}, true},
		{Attrs{"country": "BR", "os": "android"}, true}, // unset device is not tv
		{Attrs{"country": "BR", "os": "ios", "device": "tv"}, false},
		{Attrs{"country": "AR", "os": "ios"}, false},
		{Attrs{"country": "BR", "os": "windows"}, false},
		{Attrs{}, false},
	}
	for _, c := range cases {
		if got := fromJSON.Match(c.attrs); got != c.want {
			t.Errorf("Match(%v) = %v, want %v", c.attrs, got, c.want)
		}
	}
}

func TestTextForms(t *testing.T) {
	cases := []struct{ in, canonical string }{
		{"country=BR", "country=BR"},
		{"  country = BR  ", "country=BR"},
		{"country=BR or country=AR and device=tv", "country=BR OR (country=AR AND device=tv)"},
		{"(country=BR OR country=AR) AND device!=tv", "(country=BR OR country=AR) AND device!=tv"},
		{"NOT (os=ios OR os=android)", "NOT (os=ios OR os=android)"},
		{"NOT NOT os=ios", "NOT os!=ios"},
		{"TRUE", "TRUE"},
		{`city="São Paulo"`, `city="São Paulo"`},
		{`x-tier="and"`, `x-tier="and"`},
		{`isp="a\"b"`, `isp="a\"b"`},
		{"stream=cup-final AND asn IN (AS123, AS456)", "stream=cup-final AND asn IN (AS123,AS456)"},
		{"((country=BR))", "country=BR"},
		{"(country=BR AND os=ios) AND device=tv", "(country=BR AND os=ios) AND device=tv"},
	}
	for _, c := range cases {
		p, err := ParsePredicateText(c.in)
		if err != nil {
			t.Errorf("%q: %v", c.in, err)
			continue
		}
		if got := p.String(); got != c.canonical {
			t.Errorf("%q printed as %q, want %q", c.in, got, c.canonical)
		}
		q, err := ParsePredicateJSON([]byte(p.JSON()))
		if err != nil || !q.Equal(p) {
			t.Errorf("%q: JSON %s did not round-trip: %v", c.in, p.JSON(), err)
		}
	}
}

func TestTextErrors(t *testing.T) {
	cases := map[string]string{
		"":                       "empty",
		"country":                `expected "=", "!=" or IN`,
		"country=":               "expected a value",
		"colour=red":             `unknown attribute "colour"`,
		"country=BR AND":         "expected a comparison",
		"country=BR)":            `unexpected ")"`,
		"(country=BR":            `expected ")"`,
		"os IN ()":               "expected a value",
		"os IN (ios":             `expected "," or ")"`,
		"os IN ios":              `expected "(" after IN`,
		"country!BR":             "'!' must be followed by '='",
		`city="unterminated`:     "unterminated string",
		"country=BR;":            "unexpected character",
		`city=""`:                "empty value",
		"AND=x":                  "keyword",
		strings.Repeat("(", 100): "nested deeper",
	}
	for in, want := range cases {
		_, err := ParsePredicateText(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want one containing %q", in, err, want)
		}
	}
}

func TestJSONErrors(t *testing.T) {
	cases := map[string]string{
		`{}`:                                "exactly one key",
		`{"eq":["country"]}`:                "eq takes",
		`{"eq":["country",1]}`:              "eq takes",
		`{"in":["os","ios"]}`:               "in takes",
		`{"in":["os",[]]}`:                  "at least one value",
		`{"and":[{"eq":["country","BR"]}]}`: "at least two operands",
		`{"or":{}}`:                         "or takes an array",
		`{"xor":[]}`:                        "unknown operator",
		`{"eq":["colour","red"]}`:           "unknown attribute",
		`{"eq":["a","b"],"in":["c",["d"]]}`: "exactly one key",
		`[1]`:                               "expected true or an object",
		`false`:                             "expected true or an object",
		`{"not":null}`:                      "expected true or an object",
		`{"eq":["city",""]}`:                "empty value",
		strings.Repeat(`{"not":`, 40) + "true" + strings.Repeat("}", 40): "nested deeper",
	}
	for in, want := range cases {
		_, err := ParsePredicateJSON([]byte(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one containing %q", in, err, want)
		}
	}
}

func TestParsePredicateEitherForm(t *testing.T) {
	a, err := ParsePredicate(designExampleJSON)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParsePredicate(a.String())
	if err != nil || !a.Equal(b) {
		t.Fatalf("text form %q: %v", a.String(), err)
	}
	if p, err := ParsePredicate("true"); err != nil || p.Op != OpTrue {
		t.Fatalf("true: %v %v", p, err)
	}
}

// randomPredicate builds a valid predicate over a small vocabulary so that
// random profiles match it often enough to matter.
func randomPredicate(r *rand.Rand, depth int) *Predicate {
	attrs := []string{"country", "os", "device", "stream", "x-tier"}
	values := []string{"BR", "AR", "ios", "tv", "cup-final", "and", "São Paulo", `q"uote`}
	leaf := func() *Predicate {
		a := attrs[r.IntN(len(attrs))]
		if r.IntN(2) == 0 {
			return Eq(a, values[r.IntN(len(values))])
		}
		n := 1 + r.IntN(3)
		vs := make([]string, n)
		for i := range vs {
			vs[i] = values[r.IntN(len(values))]
		}
		return In(a, vs...)
	}
	if depth <= 0 {
		return leaf()
	}
	switch r.IntN(6) {
	case 0:
		return Not(randomPredicate(r, depth-1))
	case 1, 2:
		n := 2 + r.IntN(3)
		args := make([]*Predicate, n)
		for i := range args {
			args[i] = randomPredicate(r, depth-1)
		}
		if r.IntN(2) == 0 {
			return And(args...)
		}
		return Or(args...)
	case 3:
		if r.IntN(8) == 0 {
			return True()
		}
	}
	return leaf()
}

func TestRandomRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 2000; i++ {
		p := randomPredicate(r, 4)
		if err := p.Validate(); err != nil {
			t.Fatalf("generated invalid predicate %s: %v", p, err)
		}
		txt, err := ParsePredicateText(p.String())
		if err != nil || !txt.Equal(p) {
			t.Fatalf("text round-trip of %s: got %v, %v", p, txt, err)
		}
		js, err := ParsePredicateJSON([]byte(p.JSON()))
		if err != nil || !js.Equal(p) {
			t.Fatalf("JSON round-trip of %s: got %v, %v", p.JSON(), js, err)
		}
	}
}

func FuzzParsePredicateText(f *testing.F) {
	for _, s := range []string{
		"country=BR AND os IN (ios,android) AND NOT device=tv",
		"(a=b", "stream=x OR (device!=tv AND NOT lang=pt)", `city="S\u00e3o"`, "TRUE", "os IN (a,b,c)",
		"x-a=1 or x-b=2 and not x-c=3", "", "!", `"`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePredicateText(s)
		if err != nil {
			return
		}
		q, err := ParsePredicateText(p.String())
		if err != nil {
			t.Fatalf("printed form %q of %q does not parse: %v", p.String(), s, err)
		}
		if !q.Equal(p) {
			t.Fatalf("%q → %q → different tree", s, p.String())
		}
		r, err := ParsePredicateJSON([]byte(p.JSON()))
		if err != nil || !r.Equal(p) {
			t.Fatalf("JSON form %s of %q does not round-trip: %v", p.JSON(), s, err)
		}
	})
}

func FuzzParsePredicateJSON(f *testing.F) {
	for _, s := range []string{
		designExampleJSON, `true`, `{"or":[{"eq":["stream","a"]},{"eq":["stream","b"]}]}`,
		`{"not":{"in":["os",["ios"]]}}`, `{"eq":["city","S\u00e3o Paulo"]}`, `{}`, `[`, `{"and":[]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParsePredicateJSON(data)
		if err != nil {
			return
		}
		q, err := ParsePredicateJSON([]byte(p.JSON()))
		if err != nil || !q.Equal(p) {
			t.Fatalf("canonical form %s of %q does not round-trip: %v", p.JSON(), data, err)
		}
		r, err := ParsePredicateText(p.String())
		if err != nil || !r.Equal(p) {
			t.Fatalf("text form %q of %q does not round-trip: %v", p.String(), data, err)
		}
	})
}
