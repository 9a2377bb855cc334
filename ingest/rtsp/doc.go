// Package rtsp is the RTSP side of the ingest tier (RFC 2326): a server on
// its own port that takes streams from publishers (ANNOUNCE, SETUP,
// RECORD; RTP over TCP-interleaved or UDP unicast) and serves every live
// stream, whatever protocol published it, to readers (DESCRIBE, SETUP,
// PLAY); and a client that pulls a stream from another RTSP server (an IP
// camera) into the registry, on demand or always, reconnecting with
// backoff.
//
// The RTSP path is the stream name, as for WHIP and WHEP:
// rtsp://host:8554/<stream> is /whep/<stream>. Publishing needs a stream
// key, given as ?key=<key> or as the password of Basic or Digest
// credentials (a Digest user name is the key's id; the master key takes
// any user name).
//
// Every source ends up in the one stream model of internal/media. H.264
// from RTSP publishers is reassembled into access units and packetized
// again, with the SPS and PPS in band ahead of every IDR picture and
// payloads small enough for WebRTC; other codecs (H.265, AAC, Opus, G.711)
// are forwarded as they came. Readers get the registry's packets untouched
// (its sequence numbers and timestamps) and the publisher's sender reports
// mapped to them.
package rtsp
