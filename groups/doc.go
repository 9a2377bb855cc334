// Package groups is the shared group model: profile attributes, group
// definitions as predicates over attributes, the membership index, and the
// mirror protocol between connection and application servers.
package groups
