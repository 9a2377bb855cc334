package rtc

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/pion/sdp/v3"

	"github.com/backchannel/backchannel/internal/media"
)

// Offer is what WHIP and WHEP need to know about an untrusted SDP offer
// before handing it to pion: its media sections and their codecs.
type Offer struct {
	Media []OfferMedia
}

// OfferMedia is one m= section of an offer.
type OfferMedia struct {
	Kind      string // "audio", "video", "application", …
	Mid       string
	Direction string // "sendrecv", "sendonly", "recvonly" or "inactive"
	Rejected  bool   // port 0
	Simulcast bool
	Codecs    []OfferCodec
}

// OfferCodec is one payload type offered in a media section.
type OfferCodec struct {
	PayloadType uint8
	media.Codec
	Feedback []string // a=rtcp-fb values, e.g. "nack pli"
}

// Sends reports whether the offerer sends media in this section.
func (m OfferMedia) Sends() bool {
	return !m.Rejected && (m.Direction == "sendrecv" || m.Direction == "sendonly")
}

// Receives reports whether the offerer wants to receive media in this section.
func (m OfferMedia) Receives() bool {
	return !m.Rejected && (m.Direction == "sendrecv" || m.Direction == "recvonly")
}

// Limits on what an offer may contain; real ones are far below them.
const (
	maxOfferMedia  = 16
	maxOfferCodecs = 64
)

// ParseOffer parses and sanity-checks an SDP offer. It never panics on
// malformed input; errors say what is wrong in terms a client can act on.
func ParseOffer(raw string) (*Offer, error) {
	if strings.TrimSpace(raw) == "" {
		return nil, errors.New("empty SDP offer")
	}
	var sd sdp.SessionDescription
	if err := sd.UnmarshalString(raw); err != nil {
		return nil, fmt.Errorf("unparsable SDP offer: %w", err)
	}
	if len(sd.MediaDescriptions) == 0 {
		return nil, errors.New("SDP offer has no media sections")
	}
	if len(sd.MediaDescriptions) > maxOfferMedia {
		return nil, fmt.Errorf("SDP offer has %d media sections, at most %d are accepted", len(sd.MediaDescriptions), maxOfferMedia)
	}
	sessionDir := direction(sd.Attributes, "sendrecv")
	out := &Offer{Media: make([]OfferMedia, 0, len(sd.MediaDescriptions))}
	for i, md := range sd.MediaDescriptions {
		m := OfferMedia{
			Kind:      strings.ToLower(md.MediaName.Media),
			Direction: direction(md.Attributes, sessionDir),
			Rejected:  md.MediaName.Port.Value == 0,
		}
		m.Mid, _ = md.Attribute("mid")
		_, m.Simulcast = md.Attribute("simulcast")
		if m.Kind == "audio" || m.Kind == "video" {
			codecs, err := parseCodecs(m.Kind, md)
			if err != nil {
				return nil, fmt.Errorf("media section %d: %w", i, err)
			}
			m.Codecs = codecs
		}
		out.Media = append(out.Media, m)
	}
	return out, nil
}

func direction(attrs []sdp.Attribute, def string) string {
	for _, a := range attrs {
		switch a.Key {
		case "sendrecv", "sendonly", "recvonly", "inactive":
			return a.Key
		}
	}
	return def
}

func parseCodecs(kind string, md *sdp.MediaDescription) ([]OfferCodec, error) {
	if len(md.MediaName.Formats) > maxOfferCodecs {
		return nil, fmt.Errorf("%d payload types offered, at most %d are accepted", len(md.MediaName.Formats), maxOfferCodecs)
	}
	byPT := map[uint8]*OfferCodec{}
	var order []uint8
	for _, f := range md.MediaName.Formats {
		pt, err := strconv.ParseUint(f, 10, 7)
		if err != nil {
			continue // not an RTP payload type; pion rejects the offer if it matters
		}
		if _, dup := byPT[uint8(pt)]; !dup {
			byPT[uint8(pt)] = &OfferCodec{PayloadType: uint8(pt)}
			order = append(order, uint8(pt))
		}
	}
	for _, a := range md.Attributes {
		switch a.Key {
		case "rtpmap", "fmtp", "rtcp-fb":
		default:
			continue
		}
		ptStr, rest, _ := strings.Cut(a.Value, " ")
		pt, err := strconv.ParseUint(ptStr, 10, 7)
		if err != nil {
			continue // e.g. "a=rtcp-fb:* nack"
		}
		c := byPT[uint8(pt)]
		if c == nil {
			continue
		}
		rest = strings.TrimSpace(rest)
		switch a.Key {
		case "rtpmap":
			name, clock, channels, err := parseRTPMap(rest)
			if err != nil {
				return nil, fmt.Errorf("payload type %d: %w", pt, err)
			}
			c.MimeType, c.ClockRate, c.Channels = kind+"/"+name, clock, channels
		case "fmtp":
			c.Fmtp = rest
		case "rtcp-fb":
			c.Feedback = append(c.Feedback, rest)
		}
	}
	out := make([]OfferCodec, 0, len(order))
	for _, pt := range order {
		c := byPT[pt]
		if c.MimeType == "" {
			continue // static payload types without rtpmap are not used by WebRTC
		}
		out = append(out, *c)
	}
	return out, nil
}

func parseRTPMap(v string) (name string, clock uint32, channels uint16, err error) {
	parts := strings.Split(v, "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" {
		return "", 0, 0, fmt.Errorf("bad rtpmap %q", v)
	}
	c, err := strconv.ParseUint(parts[1], 10, 32)
	if err != nil || c == 0 {
		return "", 0, 0, fmt.Errorf("bad clock rate in rtpmap %q", v)
	}
	if len(parts) == 3 {
		ch, err := strconv.ParseUint(parts[2], 10, 16)
		if err != nil {
			return "", 0, 0, fmt.Errorf("bad channel count in rtpmap %q", v)
		}
		channels = uint16(ch)
	}
	return parts[0], uint32(c), channels, nil
}
