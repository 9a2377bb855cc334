package groups

import (
	"encoding/json"
	"fmt"
	"strings"
)

// ParsePredicateText parses the compact text form, e.g.
//
//	country=BR AND os IN (ios,android) AND NOT device=tv
//
// Grammar (keywords are case-insensitive; AND binds tighter than OR):
//
//	expr    = and { "OR" and }
//	and     = unary { "AND" unary }
//	unary   = "NOT" unary | "(" expr ")" | "TRUE" | compare
//	compare = attr "=" value | attr "!=" value | attr "IN" "(" value { "," value } ")"
//	value   = bare word of [A-Za-z0-9_.:/+@*-] | JSON string literal
//
// "a!=b" is the same tree as "NOT a=b". Printing with String and parsing back
// yields the same tree.
func ParsePredicateText(s string) (*Predicate, error) {
	if len(s) > MaxPredicateBytes {
		return nil, fmt.Errorf("predicate: longer than %d bytes", MaxPredicateBytes)
	}
	p := &textParser{src: s}
	if err := p.next(); err != nil {
		return nil, err
	}
	if p.tok.kind == tokEOF {
		return nil, fmt.Errorf("predicate: empty")
	}
	pred, err := p.parseOr(1)
	if err != nil {
		return nil, err
	}
	if p.tok.kind != tokEOF {
		return nil, p.errorf("unexpected %s", p.tok)
	}
	if err := pred.Validate(); err != nil {
		return nil, fmt.Errorf("predicate: %w", err)
	}
	return pred, nil
}

// ParsePredicate accepts either form: JSON when the input starts with '{' or
// is the literal true, text otherwise.
func ParsePredicate(s string) (*Predicate, error) {
	t := strings.TrimSpace(s)
	if strings.HasPrefix(t, "{") || t == "true" {
		return ParsePredicateJSON([]byte(t))
	}
	return ParsePredicateText(s)
}

type tokKind uint8

const (
	tokEOF tokKind = iota
	tokWord
	tokString
	tokLParen
	tokRParen
	tokComma
	tokEq
	tokNe
)

type token struct {
	kind tokKind
	text string // word text or decoded string
	pos  int
}

func (t token) String() string {
	switch t.kind {
	case tokEOF:
		return "end of input"
	case tokWord:
		return fmt.Sprintf("%q", t.text)
	case tokString:
		return fmt.Sprintf("string %q", t.text)
	case tokLParen:
		return `"("`
	case tokRParen:
		return `")"`
	case tokComma:
		return `","`
	case tokEq:
		return `"="`
	default:
		return `"!="`
	}
}

type textParser struct {
	src   string
	pos   int
	tok   token
	nodes int
}

func (p *textParser) errorf(format string, args ...any) error {
	return fmt.Errorf("predicate: at offset %d: %s", p.tok.pos, fmt.Sprintf(format, args...))
}

func (p *textParser) next() error {
	for p.pos < len(p.src) && (p.src[p.pos] == ' ' || p.src[p.pos] == '\t' || p.src[p.pos] == '\n' || p.src[p.pos] == '\r') {
		p.pos++
	}
	start := p.pos
	if p.pos >= len(p.src) {
		p.tok = token{kind: tokEOF, pos: start}
		return nil
	}
	c := p.src[p.pos]
	switch {
	case c == '(':
		p.pos++
		p.tok = token{kind: tokLParen, pos: start}
	case c == ')':
		p.pos++
		p.tok = token{kind: tokRParen, pos: start}
	case c == ',':
		p.pos++
		p.tok = token{kind: tokComma, pos: start}
	case c == '=':
		p.pos++
		p.tok = token{kind: tokEq, pos: start}
	case c == '!':
		if p.pos+1 < len(p.src) && p.src[p.pos+1] == '=' {
			p.pos += 2
			p.tok = token{kind: tokNe, pos: start}
			return nil
		}
		return fmt.Errorf("predicate: at offset %d: '!' must be followed by '='", start)
	case c == '"':
		end := p.pos + 1
		for end < len(p.src) && p.src[end] != '"' {
			if p.src[end] == '\\' {
				end++
			}
			end++
		}
		if end >= len(p.src) {
			return fmt.Errorf("predicate: at offset %d: unterminated string", start)
		}
		var v string
		if err := json.Unmarshal([]byte(p.src[start:end+1]), &v); err != nil {
			return fmt.Errorf("predicate: at offset %d: bad string literal: %v", start, err)
		}
		p.pos = end + 1
		p.tok = token{kind: tokString, text: v, pos: start}
	case isBareByte(c):
		end := p.pos
		for end < len(p.src) && isBareByte(p.src[end]) {
			end++
		}
		p.tok = token{kind: tokWord, text: p.src[start:end], pos: start}
		p.pos = end
	default:
		return fmt.Errorf("predicate: at offset %d: unexpected character %q", start, c)
	}
	return nil
}

func (p *textParser) isKeyword(kw string) bool {
	return p.tok.kind == tokWord && strings.EqualFold(p.tok.text, kw)
}

func (p *textParser) enter(depth int) error {
	p.nodes++
	if depth > MaxPredicateDepth {
		return p.errorf("nested deeper than %d", MaxPredicateDepth)
	}
	if p.nodes > MaxPredicateNodes {
		return p.errorf("more than %d nodes", MaxPredicateNodes)
	}
	return nil
}

func (p *textParser) parseOr(depth int) (*Predicate, error) {
	first, err := p.parseAnd(depth)
	if err != nil {
		return nil, err
	}
	if !p.isKeyword("OR") {
		return first, nil
	}
	args := []*Predicate{first}
	for p.isKeyword("OR") {
		if err := p.next(); err != nil {
			return nil, err
		}
		q, err := p.parseAnd(depth)
		if err != nil {
			return nil, err
		}
		args = append(args, q)
	}
	return Or(args...), nil
}

func (p *textParser) parseAnd(depth int) (*Predicate, error) {
	first, err := p.parseUnary(depth)
	if err != nil {
		return nil, err
	}
	if !p.isKeyword("AND") {
		return first, nil
	}
	args := []*Predicate{first}
	for p.isKeyword("AND") {
		if err := p.next(); err != nil {
			return nil, err
		}
		q, err := p.parseUnary(depth)
		if err != nil {
			return nil, err
		}
		args = append(args, q)
	}
	return And(args...), nil
}

func (p *textParser) parseUnary(depth int) (*Predicate, error) {
	if err := p.enter(depth); err != nil {
		return nil, err
	}
	switch {
	case p.isKeyword("NOT"):
		if err := p.next(); err != nil {
			return nil, err
		}
		q, err := p.parseUnary(depth + 1)
		if err != nil {
			return nil, err
		}
		return Not(q), nil
	case p.tok.kind == tokLParen:
		if err := p.next(); err != nil {
			return nil, err
		}
		q, err := p.parseOr(depth + 1)
		if err != nil {
			return nil, err
		}
		if p.tok.kind != tokRParen {
			return nil, p.errorf(`expected ")", got %s`, p.tok)
		}
		return q, p.next()
	case p.isKeyword("TRUE"):
		return True(), p.next()
	case p.tok.kind == tokWord:
		return p.parseCompare()
	default:
		return nil, p.errorf("expected a comparison, NOT, TRUE or \"(\", got %s", p.tok)
	}
}

func (p *textParser) parseCompare() (*Predicate, error) {
	attr := p.tok.text
	if isKeyword(attr) {
		return nil, p.errorf("expected an attribute name, got keyword %s", p.tok)
	}
	if !ValidAttrName(attr) {
		return nil, p.errorf("unknown attribute %q", attr)
	}
	if err := p.next(); err != nil {
		return nil, err
	}
	switch {
	case p.tok.kind == tokEq || p.tok.kind == tokNe:
		ne := p.tok.kind == tokNe
		if err := p.next(); err != nil {
			return nil, err
		}
		v, err := p.parseValue()
		if err != nil {
			return nil, err
		}
		if ne {
			return Not(Eq(attr, v)), nil
		}
		return Eq(attr, v), nil
	case p.isKeyword("IN"):
		if err := p.next(); err != nil {
			return nil, err
		}
		if p.tok.kind != tokLParen {
			return nil, p.errorf(`expected "(" after IN, got %s`, p.tok)
		}
		var values []string
		for {
			if err := p.next(); err != nil {
				return nil, err
			}
			v, err := p.parseValue()
			if err != nil {
				return nil, err
			}
			values = append(values, v)
			if p.tok.kind == tokRParen {
				return In(attr, values...), p.next()
			}
			if p.tok.kind != tokComma {
				return nil, p.errorf(`expected "," or ")" in IN list, got %s`, p.tok)
			}
		}
	default:
		return nil, p.errorf(`expected "=", "!=" or IN after %q, got %s`, attr, p.tok)
	}
}

// parseValue consumes one value token and advances past it.
func (p *textParser) parseValue() (string, error) {
	if p.tok.kind != tokWord && p.tok.kind != tokString {
		return "", p.errorf("expected a value, got %s", p.tok)
	}
	v := p.tok.text
	if v == "" {
		return "", p.errorf("empty value")
	}
	return v, p.next()
}
