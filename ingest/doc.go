// Package ingest is where broadcasters push: WHIP (RFC 9725) here, RTSP in
// ingest/rtsp. It checks stream keys (KeyChecker; internal/keys implements
// it), attaches publishers to the stream registry (internal/media), reports
// on-air and off-air changes through it, and ends the sessions of a revoked
// key whatever their protocol (EndRevoked).
package ingest
