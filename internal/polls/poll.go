// Package polls is the poll model of the application tier: validation of
// what a broadcaster asks for, the poll's lifecycle, and the tally — one
// vote per user per poll, changes moving the count and never counting
// twice, and results broken down by any profile dimension. It holds no I/O:
// the application server persists what the tally decides and sends the
// messages.
package polls

import (
	"crypto/rand"
	"encoding/base32"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/backchannel/backchannel/groups"
)

// Limits from the issue: a question of at most 280 characters, 2–10
// choices.
const (
	MaxQuestion   = 280
	MaxChoice     = 100
	MinChoices    = 2
	MaxChoices    = 10
	MaxDuration   = 24 * time.Hour
	MinDuration   = time.Second
	GroupIDPrefix = "poll-" // delivery groups of polls aimed at a predicate
)

// States of a poll.
const (
	StateOpen   = "open"
	StateClosed = "closed"
)

// Poll is one poll as stored and shown by the API.
type Poll struct {
	ID       string            `json:"id"`
	Stream   string            `json:"stream"`
	Question string            `json:"question"`
	Choices  []string          `json:"choices"`
	Where    *groups.Predicate `json:"where,omitempty"` // narrows the audience within the stream's group
	Group    string            `json:"group"`           // the group the poll and its results are sent to
	Duration int64             `json:"duration_ms,omitempty"`
	State    string            `json:"state"`
	Created  time.Time         `json:"created_at"`
	ClosesAt *time.Time        `json:"closes_at,omitempty"`
	ClosedAt *time.Time        `json:"closed_at,omitempty"`
}

// Audience returns the predicate a voter's attributes must match.
func (p *Poll) Audience() *groups.Predicate {
	s := groups.Eq(groups.AttrStream, p.Stream)
	if p.Where == nil {
		return s
	}
	return groups.And(s, p.Where)
}

// Open reports whether the poll takes votes at time now.
func (p *Poll) Open(now time.Time) bool {
	return p.State == StateOpen && (p.ClosesAt == nil || now.Before(*p.ClosesAt))
}

// FieldError names one invalid request field (RFC 9457 "invalid-params").
type FieldError struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// ValidationError lists the invalid fields of a request.
type ValidationError struct{ Fields []FieldError }

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		parts[i] = f.Name + ": " + f.Reason
	}
	return "invalid poll: " + strings.Join(parts, "; ")
}

func (e *ValidationError) add(name, format string, args ...any) {
	e.Fields = append(e.Fields, FieldError{Name: name, Reason: fmt.Sprintf(format, args...)})
}

// Spec is what a broadcaster posts to create a poll.
type Spec struct {
	Stream     string   `json:"stream"`
	Question   string   `json:"question"`
	Choices    []string `json:"choices"`
	DurationMS int64    `json:"duration_ms,omitempty"`
	// Where narrows the audience: a predicate in canonical JSON or in
	// the compact text form, decoded by the caller.
	Where *groups.Predicate `json:"-"`
}

// New validates a spec and returns the poll it describes, open from now.
// validStream checks stream names (the application's rule).
func New(s Spec, now time.Time, validStream func(string) bool) (*Poll, error) {
	var ve ValidationError
	if !validStream(s.Stream) {
		ve.add("stream", "must be 1-64 characters of A-Z a-z 0-9 _ . -")
	}
	q := strings.TrimSpace(s.Question)
	switch n := utf8.RuneCountInString(q); {
	case !utf8.ValidString(q):
		ve.add("question", "must be valid UTF-8")
	case n == 0:
		ve.add("question", "is required")
	case n > MaxQuestion:
		ve.add("question", "has %d characters, at most %d are allowed", n, MaxQuestion)
	}
	switch n := len(s.Choices); {
	case n < MinChoices:
		ve.add("choices", "has %d choices, at least %d are required", n, MinChoices)
	case n > MaxChoices:
		ve.add("choices", "has %d choices, at most %d are allowed", n, MaxChoices)
	}
	choices := make([]string, len(s.Choices))
	seen := map[string]bool{}
	for i, c := range s.Choices {
		c = strings.TrimSpace(c)
		name := fmt.Sprintf("choices[%d]", i)
		switch n := utf8.RuneCountInString(c); {
		case !utf8.ValidString(c):
			ve.add(name, "must be valid UTF-8")
		case n == 0:
			ve.add(name, "is empty")
		case n > MaxChoice:
			ve.add(name, "has %d characters, at most %d are allowed", n, MaxChoice)
		case seen[strings.ToLower(c)]:
			ve.add(name, "repeats an earlier choice")
		}
		seen[strings.ToLower(c)] = true
		choices[i] = c
	}
	d := time.Duration(s.DurationMS) * time.Millisecond
	if s.DurationMS != 0 && (d < MinDuration || d > MaxDuration) {
		ve.add("duration_ms", "must be between %d and %d ms, or omitted for a poll closed by hand", MinDuration.Milliseconds(), MaxDuration.Milliseconds())
	}
	if s.Where != nil {
		if err := s.Where.Validate(); err != nil {
			ve.add("where", "%v", err)
		}
	}
	if len(ve.Fields) > 0 {
		return nil, &ve
	}
	p := &Poll{
		ID: NewID(), Stream: s.Stream, Question: q, Choices: choices, Where: s.Where,
		Duration: s.DurationMS, State: StateOpen, Created: now.UTC(),
	}
	p.Group = groups.AutoID(groups.AttrStream, s.Stream)
	if s.Where != nil {
		p.Group = GroupIDPrefix + p.ID
	}
	if d > 0 {
		at := p.Created.Add(d)
		p.ClosesAt = &at
	}
	return p, nil
}

// NewID returns a fresh poll id.
func NewID() string {
	var b [10]byte
	_, _ = rand.Read(b[:])
	return "p" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}
