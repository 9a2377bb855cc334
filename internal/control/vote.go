package control

import "encoding/json"

// VoteRef is a vote frame read in place: Poll and ID point into the frame.
type VoteRef struct {
	Poll, ID []byte
	Choice   int
}

// ParseVote reads a plain vote frame without copying it: one flat JSON
// object of ASCII strings without escapes, integers and booleans, such as
// every player sends. It reports false for anything else — another type,
// escapes, nested values, null, a key that differs from a known one only
// in case, an invalid or out-of-range vote — and the caller decodes the
// frame with DecodeClient, which then accepts or refuses it as always.
// ParseVote never accepts a frame DecodeClient would refuse or read
// differently (FuzzParseVote checks this).
func ParseVote(b []byte) (VoteRef, bool) {
	var v VoteRef
	if len(b) > MaxFrame {
		return v, false
	}
	var t []byte
	haveT := false
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return v, false
	}
	i = skipSpace(b, i+1)
	for {
		key, j, ok := plainString(b, i)
		if !ok {
			return v, false
		}
		i = skipSpace(b, j)
		if i >= len(b) || b[i] != ':' {
			return v, false
		}
		i = skipSpace(b, i+1)
		switch string(key) {
		case "t":
			t, i, ok = plainString(b, i)
			haveT = true
		case "poll":
			v.Poll, i, ok = plainString(b, i)
		case "id":
			v.ID, i, ok = plainString(b, i)
		case "choice":
			v.Choice, i, ok = integer(b, i)
		default:
			if foldsToVoteKey(key) {
				return v, false
			}
			i, ok = skipScalar(b, i)
		}
		if !ok {
			return v, false
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return v, false
		}
		if b[i] == '}' {
			i++
			break
		}
		if b[i] != ',' {
			return v, false
		}
		i = skipSpace(b, i+1)
	}
	if skipSpace(b, i) != len(b) || !haveT || string(t) != TypeVote {
		return v, false
	}
	if len(v.Poll) == 0 || len(v.ID) == 0 || len(v.Poll) > 64 || len(v.ID) > 64 || v.Choice < 0 {
		return v, false
	}
	return v, true
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// plainString reads a JSON string of printable ASCII without escapes
// starting at b[i] and returns its contents and the index after it.
func plainString(b []byte, i int) ([]byte, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, i, false
	}
	start := i + 1
	for j := start; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return b[start:j], j + 1, true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return nil, j, false
		}
	}
	return nil, len(b), false
}

// integer reads a JSON number that is a plain integer fitting an int (up
// to 18 digits). Fractions and exponents are left to encoding/json, which
// refuses them for an int field.
func integer(b []byte, i int) (int, int, bool) {
	neg := false
	if i < len(b) && b[i] == '-' {
		neg = true
		i++
	}
	start := i
	n := 0
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		n = n*10 + int(b[i]-'0')
		i++
	}
	digits := i - start
	if digits == 0 || digits > 18 || (b[start] == '0' && digits > 1) {
		return 0, i, false
	}
	if i < len(b) && (b[i] == '.' || b[i] == 'e' || b[i] == 'E') {
		return 0, i, false
	}
	if neg {
		n = -n
	}
	return n, i, true
}

// skipScalar skips the value of a member the vote does not read: a plain
// string, a number, true or false.
func skipScalar(b []byte, i int) (int, bool) {
	if i >= len(b) {
		return i, false
	}
	switch c := b[i]; {
	case c == '"':
		_, j, ok := plainString(b, i)
		return j, ok
	case c == '-' || (c >= '0' && c <= '9'):
		return skipNumber(b, i)
	case hasWord(b, i, "true"):
		return i + 4, true
	case hasWord(b, i, "false"):
		return i + 5, true
	}
	return i, false
}

func hasWord(b []byte, i int, w string) bool {
	return len(b)-i >= len(w) && string(b[i:i+len(w)]) == w
}

// skipNumber skips a number of the JSON grammar:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func skipNumber(b []byte, i int) (int, bool) {
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		i = skipDigits(b, i)
	default:
		return i, false
	}
	if i < len(b) && b[i] == '.' {
		j := skipDigits(b, i+1)
		if j == i+1 {
			return j, false
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := skipDigits(b, i)
		if j == i {
			return j, false
		}
		i = j
	}
	return i, true
}

func skipDigits(b []byte, i int) int {
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return i
}

// foldsToVoteKey reports whether key would match one of the vote's keys
// the way encoding/json matches names (without regard to case).
func foldsToVoteKey(key []byte) bool {
	for _, k := range [...]string{"t", "poll", "id", "choice"} {
		if len(key) == len(k) && asciiEqualFold(key, k) {
			return true
		}
	}
	return false
}

func asciiEqualFold(a []byte, b string) bool {
	for i := range a {
		x, y := a[i], b[i]
		if x >= 'A' && x <= 'Z' {
			x += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// AppendAck appends the message acknowledging the vote with id, as
// Encode(Ack{ID: id}) encodes it, to b: the connection server builds one
// per counted vote, and a plain id, the usual case, takes no allocation.
func AppendAck(b, id []byte) []byte {
	b = append(b, `{"t":"ack","id":`...)
	for _, c := range id {
		if c < 0x20 || c == '"' || c == '\\' || c >= 0x80 || c == '<' || c == '>' || c == '&' {
			// What encoding/json escapes, or may: let it.
			q, _ := json.Marshal(string(id))
			b = append(b, q...)
			return append(b, '}')
		}
	}
	b = append(b, '"')
	b = append(b, id...)
	return append(b, '"', '}')
}
