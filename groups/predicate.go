package groups

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// Op is the operator at one node of a predicate.
type Op uint8

// Operators. OpTrue matches every profile; it is the predicate of the global
// group and prints as JSON true and text TRUE.
const (
	OpTrue Op = iota
	OpEq      // Attr = Values[0]
	OpIn      // Attr is one of Values
	OpNot     // not Args[0]
	OpAnd     // all of Args (two or more)
	OpOr      // any of Args (two or more)
)

// Parser limits: a predicate is configuration, not data, so anything bigger
// than this is a mistake or an attack.
const (
	MaxPredicateDepth = 32
	MaxPredicateNodes = 512
	MaxPredicateBytes = 16 << 10
)

// Predicate is a boolean expression over profile attributes. Build one with
// the constructors or parse one with ParsePredicateJSON or ParsePredicateText.
type Predicate struct {
	Op     Op
	Attr   string       // OpEq, OpIn
	Values []string     // OpEq (one value), OpIn (one or more)
	Args   []*Predicate // OpNot (one), OpAnd, OpOr (two or more)
}

// True returns the predicate that matches every profile.
func True() *Predicate { return &Predicate{Op: OpTrue} }

// Eq returns attr = value.
func Eq(attr, value string) *Predicate {
	return &Predicate{Op: OpEq, Attr: attr, Values: []string{value}}
}

// In returns attr IN (values...).
func In(attr string, values ...string) *Predicate {
	return &Predicate{Op: OpIn, Attr: attr, Values: values}
}

// Not returns the negation of p.
func Not(p *Predicate) *Predicate { return &Predicate{Op: OpNot, Args: []*Predicate{p}} }

// And returns the conjunction of ps.
func And(ps ...*Predicate) *Predicate { return &Predicate{Op: OpAnd, Args: ps} }

// Or returns the disjunction of ps.
func Or(ps ...*Predicate) *Predicate { return &Predicate{Op: OpOr, Args: ps} }

// Match reports whether a profile with attributes a satisfies p. An unset
// attribute equals no value, so "device=tv" is false and "NOT device=tv" true
// for a profile without a device.
func (p *Predicate) Match(a Attrs) bool { return match(p, a) }

// attrGetter reads one attribute's value ("" when unset). Predicates are
// evaluated through it so the membership index can match its compact
// member records without building a map for each.
type attrGetter interface{ Get(attr string) string }

// Get implements attrGetter.
func (a Attrs) Get(attr string) string { return a[attr] }

func match[G attrGetter](p *Predicate, a G) bool {
	switch p.Op {
	case OpTrue:
		return true
	case OpEq:
		v := a.Get(p.Attr)
		return v != "" && v == p.Values[0]
	case OpIn:
		v := a.Get(p.Attr)
		return v != "" && slices.Contains(p.Values, v)
	case OpNot:
		return !match(p.Args[0], a)
	case OpAnd:
		for _, q := range p.Args {
			if !match(q, a) {
				return false
			}
		}
		return true
	case OpOr:
		for _, q := range p.Args {
			if match(q, a) {
				return true
			}
		}
		return false
	}
	return false
}

// Attrs returns the attribute names p reads, sorted and without duplicates.
func (p *Predicate) Attrs() []string {
	var names []string
	var walk func(*Predicate)
	walk = func(q *Predicate) {
		if q.Op == OpEq || q.Op == OpIn {
			names = append(names, q.Attr)
		}
		for _, c := range q.Args {
			walk(c)
		}
	}
	walk(p)
	slices.Sort(names)
	return slices.Compact(names)
}

// Equal reports whether p and q are the same tree.
func (p *Predicate) Equal(q *Predicate) bool {
	if p.Op != q.Op || p.Attr != q.Attr || !slices.Equal(p.Values, q.Values) || len(p.Args) != len(q.Args) {
		return false
	}
	for i := range p.Args {
		if !p.Args[i].Equal(q.Args[i]) {
			return false
		}
	}
	return true
}

// Validate checks names, values, arity and size limits.
func (p *Predicate) Validate() error {
	nodes := 0
	return p.validate(1, &nodes)
}

func (p *Predicate) validate(depth int, nodes *int) error {
	*nodes++
	if depth > MaxPredicateDepth {
		return fmt.Errorf("predicate nested deeper than %d", MaxPredicateDepth)
	}
	if *nodes > MaxPredicateNodes {
		return fmt.Errorf("predicate has more than %d nodes", MaxPredicateNodes)
	}
	switch p.Op {
	case OpTrue:
		return nil
	case OpEq, OpIn:
		if !ValidAttrName(p.Attr) {
			return fmt.Errorf("unknown attribute %q", p.Attr)
		}
		if p.Op == OpEq && len(p.Values) != 1 {
			return errors.New("eq needs exactly one value")
		}
		if len(p.Values) == 0 {
			return fmt.Errorf("in %q needs at least one value", p.Attr)
		}
		for _, v := range p.Values {
			if v == "" {
				return fmt.Errorf("empty value for %q", p.Attr)
			}
			if len(v) > MaxAttrValueLen {
				return fmt.Errorf("value for %q longer than %d bytes", p.Attr, MaxAttrValueLen)
			}
			if !utf8.ValidString(v) {
				return fmt.Errorf("value for %q is not valid UTF-8", p.Attr)
			}
		}
		return nil
	case OpNot:
		if len(p.Args) != 1 || p.Args[0] == nil {
			return errors.New("not needs exactly one operand")
		}
	case OpAnd, OpOr:
		if len(p.Args) < 2 {
			return fmt.Errorf("%s needs at least two operands", opName[p.Op])
		}
	default:
		return fmt.Errorf("unknown operator %d", p.Op)
	}
	for _, c := range p.Args {
		if c == nil {
			return errors.New("missing operand")
		}
		if err := c.validate(depth+1, nodes); err != nil {
			return err
		}
	}
	return nil
}

var opName = [...]string{OpTrue: "true", OpEq: "eq", OpIn: "in", OpNot: "not", OpAnd: "and", OpOr: "or"}

// MarshalJSON writes the canonical JSON form, e.g.
// {"and":[{"eq":["country","BR"]},{"not":{"eq":["device","tv"]}}]}.
func (p *Predicate) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	p.appendJSON(&b)
	return b.Bytes(), nil
}

// JSON returns the canonical JSON form as a string.
func (p *Predicate) JSON() string {
	b, _ := p.MarshalJSON()
	return string(b)
}

func (p *Predicate) appendJSON(b *bytes.Buffer) {
	quote := func(s string) {
		q, _ := json.Marshal(s)
		b.Write(q)
	}
	switch p.Op {
	case OpTrue:
		b.WriteString("true")
	case OpEq:
		b.WriteString(`{"eq":[`)
		quote(p.Attr)
		b.WriteByte(',')
		quote(p.Values[0])
		b.WriteString("]}")
	case OpIn:
		b.WriteString(`{"in":[`)
		quote(p.Attr)
		b.WriteString(",[")
		for i, v := range p.Values {
			if i > 0 {
				b.WriteByte(',')
			}
			quote(v)
		}
		b.WriteString("]]}")
	case OpNot:
		b.WriteString(`{"not":`)
		p.Args[0].appendJSON(b)
		b.WriteByte('}')
	case OpAnd, OpOr:
		b.WriteString(`{"`)
		b.WriteString(opName[p.Op])
		b.WriteString(`":[`)
		for i, c := range p.Args {
			if i > 0 {
				b.WriteByte(',')
			}
			c.appendJSON(b)
		}
		b.WriteString("]}")
	}
}

// UnmarshalJSON parses the canonical JSON form; see ParsePredicateJSON.
func (p *Predicate) UnmarshalJSON(data []byte) error {
	q, err := ParsePredicateJSON(data)
	if err != nil {
		return err
	}
	*p = *q
	return nil
}

// ParsePredicateJSON parses the canonical JSON form: true, {"eq":[attr,value]},
// {"in":[attr,[values...]]}, {"not":P}, {"and":[P,P,...]}, {"or":[P,P,...]}.
func ParsePredicateJSON(data []byte) (*Predicate, error) {
	if len(data) > MaxPredicateBytes {
		return nil, fmt.Errorf("predicate: longer than %d bytes", MaxPredicateBytes)
	}
	nodes := 0
	p, err := parseJSONNode(json.RawMessage(data), 1, &nodes)
	if err != nil {
		return nil, fmt.Errorf("predicate: %w", err)
	}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("predicate: %w", err)
	}
	return p, nil
}

func parseJSONNode(raw json.RawMessage, depth int, nodes *int) (*Predicate, error) {
	*nodes++
	if depth > MaxPredicateDepth {
		return nil, fmt.Errorf("nested deeper than %d", MaxPredicateDepth)
	}
	if *nodes > MaxPredicateNodes {
		return nil, fmt.Errorf("more than %d nodes", MaxPredicateNodes)
	}
	raw = bytes.TrimSpace(raw)
	if string(raw) == "true" {
		return True(), nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return nil, fmt.Errorf("expected true or an object with one operator, got %s", snippet(raw))
	}
	if len(obj) != 1 {
		return nil, fmt.Errorf("an operator object needs exactly one key, got %d", len(obj))
	}
	for op, arg := range obj {
		switch op {
		case "eq":
			var pair []string
			if err := json.Unmarshal(arg, &pair); err != nil || len(pair) != 2 {
				return nil, fmt.Errorf(`eq takes ["attribute","value"], got %s`, snippet(arg))
			}
			return Eq(pair[0], pair[1]), nil
		case "in":
			var pair []json.RawMessage
			if err := json.Unmarshal(arg, &pair); err != nil || len(pair) != 2 {
				return nil, fmt.Errorf(`in takes ["attribute",["value",...]], got %s`, snippet(arg))
			}
			var attr string
			var values []string
			if json.Unmarshal(pair[0], &attr) != nil || json.Unmarshal(pair[1], &values) != nil {
				return nil, fmt.Errorf(`in takes ["attribute",["value",...]], got %s`, snippet(arg))
			}
			return In(attr, values...), nil
		case "not":
			c, err := parseJSONNode(arg, depth+1, nodes)
			if err != nil {
				return nil, err
			}
			return Not(c), nil
		case "and", "or":
			var items []json.RawMessage
			if err := json.Unmarshal(arg, &items); err != nil {
				return nil, fmt.Errorf("%s takes an array of predicates, got %s", op, snippet(arg))
			}
			args := make([]*Predicate, 0, len(items))
			for _, it := range items {
				c, err := parseJSONNode(it, depth+1, nodes)
				if err != nil {
					return nil, err
				}
				args = append(args, c)
			}
			if op == "and" {
				return And(args...), nil
			}
			return Or(args...), nil
		default:
			return nil, fmt.Errorf("unknown operator %q (want eq, in, not, and, or)", op)
		}
	}
	panic("unreachable")
}

func snippet(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "…"
	}
	if len(b) == 0 {
		return "nothing"
	}
	return string(b)
}

// String returns the compact text form; see ParsePredicateText.
func (p *Predicate) String() string {
	var b strings.Builder
	p.appendText(&b)
	return b.String()
}

func (p *Predicate) appendText(b *strings.Builder) {
	switch p.Op {
	case OpTrue:
		b.WriteString("TRUE")
	case OpEq:
		b.WriteString(p.Attr)
		b.WriteByte('=')
		b.WriteString(textValue(p.Values[0]))
	case OpIn:
		b.WriteString(p.Attr)
		b.WriteString(" IN (")
		for i, v := range p.Values {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(textValue(v))
		}
		b.WriteByte(')')
	case OpNot:
		c := p.Args[0]
		if c.Op == OpEq {
			b.WriteString(c.Attr)
			b.WriteString("!=")
			b.WriteString(textValue(c.Values[0]))
			return
		}
		b.WriteString("NOT ")
		c.appendOperand(b)
	case OpAnd, OpOr:
		sep := " AND "
		if p.Op == OpOr {
			sep = " OR "
		}
		for i, c := range p.Args {
			if i > 0 {
				b.WriteString(sep)
			}
			c.appendOperand(b)
		}
	}
}

// appendOperand parenthesizes compound operands so that the printed text
// parses back to exactly the same tree.
func (p *Predicate) appendOperand(b *strings.Builder) {
	if p.Op == OpAnd || p.Op == OpOr {
		b.WriteByte('(')
		p.appendText(b)
		b.WriteByte(')')
		return
	}
	p.appendText(b)
}

// textValue prints v bare when it lexes back as one bare word, else as a JSON
// string literal.
func textValue(v string) string {
	if v != "" && !isKeyword(v) {
		bare := true
		for i := 0; i < len(v); i++ {
			if !isBareByte(v[i]) {
				bare = false
				break
			}
		}
		if bare {
			return v
		}
	}
	q, _ := json.Marshal(v)
	return string(q)
}

func isBareByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '_' || c == '-' || c == '.' || c == ':' || c == '/' || c == '+' || c == '@' || c == '*'
}

func isKeyword(s string) bool {
	switch strings.ToUpper(s) {
	case "AND", "OR", "NOT", "IN", "TRUE":
		return true
	}
	return false
}
