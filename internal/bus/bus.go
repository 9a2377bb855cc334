// Package bus carries mirror-protocol messages between connection servers and
// the application tier. A Bus is a set of topics, each an ordered log; every
// consumer group of a topic receives every message, and within a group each
// message goes to one consumer (at least once: a batch the handler does not
// acknowledge is delivered again). That maps one to one onto Redis Streams
// with consumer groups, so the in-process Memory bus and a Redis bus are
// interchangeable and pass the same suite (package bustest).
package bus

import (
	"context"
	"errors"
)

// Message is one delivered message. Data must not be modified: the same
// bytes may be handed to several groups.
type Message struct {
	ID   string // unique within the topic, increasing
	Data []byte
}

// Handler processes one batch of messages, in topic order. Returning nil
// acknowledges the whole batch; returning an error leaves it unacknowledged,
// so it is delivered again (to the same group, possibly another consumer).
// Handlers must therefore tolerate duplicates.
type Handler func(ctx context.Context, batch []Message) error

// Bus is the transport between the tiers.
type Bus interface {
	// Publish appends messages to a topic, in order, as one batch. The bus
	// keeps the slices: callers must not modify them afterwards.
	Publish(ctx context.Context, topic string, msgs ...[]byte) error
	// Subscribe consumes a topic as a member of a consumer group until ctx
	// ends (returning ctx.Err()) or the bus closes (returning ErrClosed). A
	// group created by its first subscriber starts at the oldest message the
	// topic still holds.
	Subscribe(ctx context.Context, topic, group string, h Handler) error
	// Close stops every subscription and rejects further publishing.
	Close() error
}

// ErrClosed is returned by a closed bus.
var ErrClosed = errors.New("bus: closed")

// Topic names. Everything flowing up (links opened and closed, client
// messages) shares one topic, consumed by the application tier's group;
// each connection server reads its own downward topic and the broadcast
// topic, as a group named by its id.
const (
	Upward    = "bc:up"
	Broadcast = "bc:broadcast"
)

// Downward returns the topic of one connection server.
func Downward(connID string) string { return "bc:down:" + connID }

// ApplicationGroup is the consumer group of the application tier on Upward.
const ApplicationGroup = "application"
