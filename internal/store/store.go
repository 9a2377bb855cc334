// Package store keeps the application tier's durable state: small
// documents by kind and id (polls, custom groups, branding, API keys) and
// poll votes, one per (poll, user). Two implementations pass the same suite
// (package storetest): File, an append-only log under the embedded
// deployment's data directory with group-commit fsync, and Redis, for a
// cluster, written in pipelines. A nil error from a write means the data is
// durable as far as the backend goes.
package store

import (
	"context"
	"errors"

	"github.com/backchannel/backchannel/groups"
)

// Vote is a user's current vote in a poll and the profile dimensions it
// was cast with (for breakdowns after a restart).
type Vote struct {
	Poll   string       `json:"p"`
	User   string       `json:"u"`
	Choice int          `json:"c"`
	Attrs  groups.Attrs `json:"a,omitempty"`
	// AttrsKey, when not nil, is a comparable value that votes with equal
	// Attrs share (a voter's interned dimensions): a store may then write
	// those attributes once and refer to them, as the file log does.
	AttrsKey any `json:"-"`
}

// Store is durable state. Implementations are safe for concurrent use.
type Store interface {
	// Put creates or replaces a document.
	Put(ctx context.Context, kind, id string, doc []byte) error
	// Delete removes a document; removing a missing one is not an error.
	Delete(ctx context.Context, kind, id string) error
	// List returns every document of a kind, by id.
	List(ctx context.Context, kind string) (map[string][]byte, error)
	// SaveVotes records votes, each replacing the user's earlier vote in
	// the same poll. Callers batch: one call is one fsync or one pipeline.
	// The store may keep the Attrs maps: callers must not modify them.
	SaveVotes(ctx context.Context, votes []Vote) error
	// Votes calls fn for every vote of a poll, in no particular order.
	Votes(ctx context.Context, poll string, fn func(Vote)) error
	// DeleteVotes forgets a poll's votes.
	DeleteVotes(ctx context.Context, poll string) error
	Close() error
}

// ErrClosed is returned by a closed store.
var ErrClosed = errors.New("store: closed")
