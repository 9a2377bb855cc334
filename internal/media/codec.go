package media

import "strings"

// Kind is a track's media kind.
type Kind string

// The media kinds a stream can carry, one track of each at most.
const (
	KindVideo Kind = "video"
	KindAudio Kind = "audio"
)

// Codec MIME types the stream model understands. WebRTC publishers send
// H.264, VP8 and Opus; RTSP publishers and cameras add H.265, AAC
// (RFC 3640 mpeg4-generic) and G.711.
const (
	MimeH264 = "video/H264"
	MimeH265 = "video/H265"
	MimeVP8  = "video/VP8"
	MimeOpus = "audio/opus"
	MimeAAC  = "audio/MPEG4-GENERIC"
	MimePCMU = "audio/PCMU"
	MimePCMA = "audio/PCMA"
)

// Publishing protocols, as PublisherInfo.Protocol and StreamInfo.Protocol
// name them.
const (
	ProtocolWHIP     = "whip"
	ProtocolRTSP     = "rtsp"      // an RTSP client pushed the stream (ANNOUNCE/RECORD)
	ProtocolRTSPPull = "rtsp-pull" // this node pulled the stream from an RTSP server
	ProtocolRelay    = "relay"     // an edge relays the stream from its origin (or a parent edge) over WHEP
)

// Codec is the RTP payload format of a track, as negotiated with its
// publisher (the payload type itself is per peer and not part of it).
type Codec struct {
	MimeType  string // e.g. "video/H264"
	ClockRate uint32
	Channels  uint16
	Fmtp      string // the a=fmtp parameters, e.g. "packetization-mode=1;profile-level-id=42e01f"
}

// Kind derives the media kind from the MIME type ("" if neither video nor audio).
func (c Codec) Kind() Kind {
	switch {
	case hasPrefixFold(c.MimeType, "video/"):
		return KindVideo
	case hasPrefixFold(c.MimeType, "audio/"):
		return KindAudio
	}
	return ""
}

// Is reports whether c has the given MIME type (case-insensitive, as in SDP).
func (c Codec) Is(mime string) bool { return strings.EqualFold(c.MimeType, mime) }

// PlayableOverWebRTC reports whether browsers can receive the codec over
// WebRTC. H.265 and AAC are not: a WHEP answer leaves such tracks out, and
// viewers get them over LL-HLS.
func (c Codec) PlayableOverWebRTC() bool {
	for _, m := range []string{MimeH264, MimeVP8, MimeOpus, MimePCMU, MimePCMA} {
		if c.Is(m) {
			return true
		}
	}
	return false
}

// Compatible reports whether a viewer that negotiated c can keep decoding
// packets of o without renegotiating: same MIME type, clock rate and channel
// count, and for H.264 the same packetization mode. H.264 profiles may
// differ: decoders in browsers take any profile in-band.
func (c Codec) Compatible(o Codec) bool {
	if !strings.EqualFold(c.MimeType, o.MimeType) || c.ClockRate != o.ClockRate || c.Channels != o.Channels {
		return false
	}
	if c.Is(MimeH264) {
		return FmtpParam(c.Fmtp, "packetization-mode", "0") == FmtpParam(o.Fmtp, "packetization-mode", "0")
	}
	return true
}

// FmtpParam returns the value of key in an fmtp parameter string
// ("a=1;b=2"), or def when absent. Keys compare case-insensitively.
func FmtpParam(fmtp, key, def string) string {
	for part := range strings.SplitSeq(fmtp, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if ok && strings.EqualFold(strings.TrimSpace(k), key) {
			return strings.TrimSpace(v)
		}
	}
	return def
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}
