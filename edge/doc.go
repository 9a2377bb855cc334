// Package edge fans live streams out to viewers: WHEP (WebRTC) now, LL-HLS
// next. It forwards the publisher's RTP packets untouched (only SSRC and
// payload type differ per viewer), answers NACKs from a shared retransmission
// buffer, rewrites sender reports, and asks the publisher for keyframes.
package edge
