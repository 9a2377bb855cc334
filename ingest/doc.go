// Package ingest is where broadcasters push: WHIP (RFC 9725) today, RTSP next.
// It checks stream keys, attaches publishers to the stream registry
// (internal/media) and reports on-air and off-air changes through it.
package ingest
