// Package media is the one internal stream model shared by every ingest
// protocol (WHIP, RTSP) and every egress (WHEP, LL-HLS, RTSP read, relay): a
// registry of live streams, each a set of tracks that fan RTP packets out to
// sinks with stable SSRC, sequence numbers and timestamps across publisher
// changes.
package media

import "time"

// TrackInfo describes one track of a live stream, as listed by the registry.
type TrackInfo struct {
	Kind        string  `json:"kind"`  // "video" or "audio"
	Codec       string  `json:"codec"` // MIME type, e.g. "video/H264"
	ClockRate   uint32  `json:"clock_rate"`
	Channels    uint16  `json:"channels,omitempty"`
	Fmtp        string  `json:"fmtp,omitempty"`
	Width       int     `json:"width,omitempty"`
	Height      int     `json:"height,omitempty"`
	FPS         float64 `json:"fps,omitempty"`
	BitrateKbps float64 `json:"bitrate_kbps,omitempty"`
}

// StreamInfo describes a live stream.
type StreamInfo struct {
	Name      string      `json:"name"`
	Protocol  string      `json:"protocol"`  // "whip" or "rtsp"
	Publisher string      `json:"publisher"` // publisher's remote address
	Node      string      `json:"node"`      // ingest node id
	StartedAt time.Time   `json:"started_at"`
	Tracks    []TrackInfo `json:"tracks"`
}

// Event is a change of a stream's on-air state.
type Event struct {
	Stream string
	Live   bool
	Info   StreamInfo
}
