package rtsp

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/pion/sdp/v3"

	"github.com/backchannel/backchannel/internal/codec/aac"
	"github.com/backchannel/backchannel/internal/codec/h264"
	"github.com/backchannel/backchannel/internal/codec/h265"
	"github.com/backchannel/backchannel/internal/media"
)

// Media is one media section of a session description, as RTSP uses it:
// the codec of its (first) payload type and its control URL.
type Media struct {
	Kind        media.Kind
	Control     string // the a=control value, relative or absolute
	PayloadType uint8
	Codec       media.Codec
	// Unsupported says why the section cannot be ingested ("" if it can).
	Unsupported string
}

// Limits on what a session description may contain.
const (
	maxSDPMedia = 16
)

// parseSDP reads the media sections of an ANNOUNCE body or a DESCRIBE
// answer. It never panics on malformed input.
func parseSDP(body []byte) (sessionControl string, out []Media, err error) {
	var sd sdp.SessionDescription
	if err := sd.Unmarshal(body); err != nil {
		// Cameras in the field omit lines RFC 4566 requires (s=, t=);
		// add them and try once more.
		var again sdp.SessionDescription
		if err2 := again.Unmarshal(repairSDP(body)); err2 != nil {
			return "", nil, fmt.Errorf("unparsable SDP: %w", err)
		}
		sd = again
	}
	if len(sd.MediaDescriptions) == 0 {
		return "", nil, errors.New("the SDP has no media sections")
	}
	if len(sd.MediaDescriptions) > maxSDPMedia {
		return "", nil, fmt.Errorf("the SDP has %d media sections, at most %d are accepted", len(sd.MediaDescriptions), maxSDPMedia)
	}
	sessionControl, _ = sd.Attribute("control")
	for _, md := range sd.MediaDescriptions {
		m := Media{}
		m.Control, _ = md.Attribute("control")
		switch strings.ToLower(md.MediaName.Media) {
		case "video":
			m.Kind = media.KindVideo
		case "audio":
			m.Kind = media.KindAudio
		default:
			m.Unsupported = "media type " + md.MediaName.Media
			out = append(out, m)
			continue
		}
		if len(md.MediaName.Formats) == 0 {
			m.Unsupported = "no payload type"
			out = append(out, m)
			continue
		}
		pt, err := strconv.ParseUint(md.MediaName.Formats[0], 10, 7)
		if err != nil {
			m.Unsupported = "payload type " + md.MediaName.Formats[0]
			out = append(out, m)
			continue
		}
		m.PayloadType = uint8(pt)
		m.Codec, m.Unsupported = codecOf(m.Kind, m.PayloadType, md)
		out = append(out, m)
	}
	return sessionControl, out, nil
}

// repairSDP adds a missing "s=" or "t=" line to the session part of a
// description, where RFC 4566 orders them.
func repairSDP(body []byte) []byte {
	lines := strings.Split(strings.ReplaceAll(string(body), "\r\n", "\n"), "\n")
	end := len(lines) // end of the session part
	for i, l := range lines {
		if strings.HasPrefix(l, "m=") {
			end = i
			break
		}
	}
	has := func(prefix string) bool {
		for _, l := range lines[:end] {
			if strings.HasPrefix(l, prefix) {
				return true
			}
		}
		return false
	}
	// Where a line of the given type goes: after the last line of any
	// type that precedes it.
	insertAfter := func(before string, line string) {
		at := 0
		for i, l := range lines[:end] {
			if len(l) > 1 && l[1] == '=' && strings.IndexByte(before, l[0]) >= 0 {
				at = i + 1
			}
		}
		lines = append(lines[:at], append([]string{line}, lines[at:]...)...)
		end++
	}
	if !has("s=") {
		insertAfter("vo", "s=-")
	}
	if !has("t=") {
		insertAfter("vosiuepcb", "t=0 0")
	}
	return []byte(strings.Join(lines, "\r\n"))
}

// staticPayloadTypes are the RFC 3551 types cameras send without rtpmap.
var staticPayloadTypes = map[uint8]media.Codec{
	0: {MimeType: media.MimePCMU, ClockRate: 8000, Channels: 1},
	8: {MimeType: media.MimePCMA, ClockRate: 8000, Channels: 1},
}

// codecOf reads the codec of payload type pt in a media section and says
// why it cannot be ingested, if so.
func codecOf(kind media.Kind, pt uint8, md *sdp.MediaDescription) (media.Codec, string) {
	c, haveMap := staticPayloadTypes[pt]
	for _, a := range md.Attributes {
		if a.Key != "rtpmap" && a.Key != "fmtp" {
			continue
		}
		ptStr, rest, _ := strings.Cut(a.Value, " ")
		if p, err := strconv.ParseUint(strings.TrimSpace(ptStr), 10, 7); err != nil || uint8(p) != pt {
			continue
		}
		rest = strings.TrimSpace(rest)
		if a.Key == "fmtp" {
			c.Fmtp = rest
			continue
		}
		parts := strings.Split(rest, "/")
		if len(parts) < 2 {
			return c, "malformed rtpmap " + rest
		}
		clock, err := strconv.ParseUint(parts[1], 10, 32)
		if err != nil || clock == 0 {
			return c, "malformed rtpmap " + rest
		}
		c.MimeType, c.ClockRate, c.Channels = string(kind)+"/"+parts[0], uint32(clock), 0
		if len(parts) > 2 {
			ch, err := strconv.ParseUint(parts[2], 10, 16)
			if err != nil {
				return c, "malformed rtpmap " + rest
			}
			c.Channels = uint16(ch)
		}
		haveMap = true
	}
	if !haveMap {
		return c, fmt.Sprintf("payload type %d without rtpmap", pt)
	}
	switch {
	case c.Is(media.MimeH264) && kind == media.KindVideo:
		c.MimeType = media.MimeH264
		f, err := h264.ParseFMTP(c.Fmtp)
		if err != nil {
			return c, err.Error()
		}
		if f.PacketizationMode == 2 {
			return c, "H.264 interleaved mode (packetization-mode=2)"
		}
	case (c.Is(media.MimeH265) || c.Is("video/HEVC")) && kind == media.KindVideo:
		c.MimeType = media.MimeH265
		f, err := h265.ParseFMTP(c.Fmtp)
		if err != nil {
			return c, err.Error()
		}
		if f.MaxDONDiff > 0 {
			return c, "H.265 with decoding order numbers (sprop-max-don-diff)"
		}
	case c.Is(media.MimeAAC) && kind == media.KindAudio:
		c.MimeType = media.MimeAAC
		f, err := aac.ParseFMTP(c.Fmtp)
		if err != nil {
			return c, err.Error()
		}
		if f.IndexLength > 0 && f.SizeLength == 0 {
			return c, "AAC without AU sizes"
		}
		if c.Channels == 0 {
			c.Channels = uint16(f.Config.Channels())
		}
	case c.Is(media.MimeOpus) && kind == media.KindAudio:
		c.MimeType = media.MimeOpus
		if c.ClockRate != 48000 {
			return c, "Opus with a clock rate other than 48000"
		}
		if c.Channels == 0 {
			c.Channels = 2
		}
	case (c.Is(media.MimePCMU) || c.Is(media.MimePCMA)) && kind == media.KindAudio:
		if c.Is(media.MimePCMU) {
			c.MimeType = media.MimePCMU
		} else {
			c.MimeType = media.MimePCMA
		}
		if c.Channels == 0 {
			c.Channels = 1
		}
	default:
		return c, "codec " + c.MimeType
	}
	return c, ""
}

// controlTail returns what identifies a track in a URL: the text after the
// stream name, in the path ("x/trackID=0") or, the way ffmpeg builds SETUP
// URLs from a URL with a query, after the last slash of the query
// ("x?key=abc/streamid=0"). It also returns the query without the tail.
func controlTail(u *url.URL) (stream, tail, rawQuery string) {
	path := strings.Trim(u.EscapedPath(), "/")
	stream, tail, _ = strings.Cut(path, "/")
	rawQuery = u.RawQuery
	if tail == "" {
		if i := strings.LastIndexByte(rawQuery, '/'); i >= 0 {
			tail, rawQuery = rawQuery[i+1:], rawQuery[:i]
		}
	}
	if s, err := url.PathUnescape(stream); err == nil {
		stream = s
	}
	return stream, tail, rawQuery
}

// tailOf returns the track identifier part of a control attribute: for an
// absolute URL what controlTail finds, else the value itself.
func tailOf(control string) string {
	if strings.Contains(control, "://") {
		if u, err := url.Parse(control); err == nil {
			_, tail, _ := controlTail(u)
			return tail
		}
	}
	return strings.Trim(control, "/")
}

// describeTrack is one track of the SDP served to RTSP readers.
type describeTrack struct {
	track *media.Track
	pt    uint8
}

// payloadTypeFor picks the payload type a track is served under: the
// static type of G.711, else 96 for video and 97 for audio.
func payloadTypeFor(c media.Codec) uint8 {
	switch {
	case c.Is(media.MimePCMU) && c.ClockRate == 8000 && c.Channels <= 1:
		return 0
	case c.Is(media.MimePCMA) && c.ClockRate == 8000 && c.Channels <= 1:
		return 8
	case c.Kind() == media.KindVideo:
		return 96
	}
	return 97
}

// buildSDP describes a live stream to RTSP readers. Controls are absolute
// URLs under base ("rtsp://host:port/stream"), which clients use as they
// are, whatever query their own URL carried.
func buildSDP(base, stream, originHost string, tracks []*media.Track, started time.Time) ([]byte, []describeTrack) {
	sd := sdp.SessionDescription{
		Version: 0,
		Origin: sdp.Origin{Username: "-", SessionID: uint64(started.UnixNano()) & (1<<62 - 1), SessionVersion: 1,
			NetworkType: "IN", AddressType: "IP4", UnicastAddress: originHost},
		SessionName: sdp.SessionName(stream),
		ConnectionInformation: &sdp.ConnectionInformation{NetworkType: "IN", AddressType: "IP4",
			Address: &sdp.Address{Address: "0.0.0.0"}},
		TimeDescriptions: []sdp.TimeDescription{{Timing: sdp.Timing{}}},
		Attributes: []sdp.Attribute{
			{Key: "tool", Value: "backchannel"},
			{Key: "range", Value: "npt=now-"},
			{Key: "control", Value: base},
		},
	}
	var out []describeTrack
	for i, t := range tracks {
		c := t.Codec()
		pt := payloadTypeFor(c)
		rtpmap := fmt.Sprintf("%d %s/%d", pt, encodingName(c), c.ClockRate)
		if c.Kind() == media.KindAudio && c.Channels > 1 {
			rtpmap += "/" + strconv.Itoa(int(c.Channels))
		}
		md := &sdp.MediaDescription{
			MediaName: sdp.MediaName{Media: string(c.Kind()), Port: sdp.RangedPort{Value: 0},
				Protos: []string{"RTP", "AVP"}, Formats: []string{strconv.Itoa(int(pt))}},
		}
		md.Attributes = append(md.Attributes, sdp.Attribute{Key: "rtpmap", Value: rtpmap})
		if fmtp := serveFmtp(t); fmtp != "" {
			md.Attributes = append(md.Attributes, sdp.Attribute{Key: "fmtp", Value: strconv.Itoa(int(pt)) + " " + fmtp})
		}
		md.Attributes = append(md.Attributes, sdp.Attribute{Key: "control", Value: base + "/trackID=" + strconv.Itoa(i)})
		sd.MediaDescriptions = append(sd.MediaDescriptions, md)
		out = append(out, describeTrack{track: t, pt: pt})
	}
	b, err := sd.Marshal()
	if err != nil {
		// Only possible with nil fields, which are all set above.
		panic(err)
	}
	return b, out
}

// encodingName is the rtpmap encoding name of a codec.
func encodingName(c media.Codec) string {
	_, name, _ := strings.Cut(c.MimeType, "/")
	switch {
	case c.Is(media.MimeOpus):
		return "opus"
	case c.Is(media.MimeAAC):
		return "MPEG4-GENERIC"
	}
	return strings.ToUpper(name)
}

// serveFmtp is the fmtp of a served track: the publisher's, with the
// parameter sets replaced by the latest seen in band, so readers can start
// decoding whatever protocol published the stream.
func serveFmtp(t *media.Track) string {
	c := t.Codec()
	ps := t.ParameterSets()
	switch {
	case c.Is(media.MimeH264):
		f := c.Fmtp
		if ps.SPS != nil && ps.PPS != nil {
			f = media.WithFmtpParam(f, "sprop-parameter-sets", b64(ps.SPS)+","+b64(ps.PPS))
			if len(ps.SPS) >= 4 {
				f = media.WithFmtpParam(f, "profile-level-id", fmt.Sprintf("%02x%02x%02x", ps.SPS[1], ps.SPS[2], ps.SPS[3]))
			}
		}
		if media.FmtpParam(f, "packetization-mode", "") == "" {
			f = media.WithFmtpParam(f, "packetization-mode", "1")
		}
		// WebRTC-only parameters mean nothing to RTSP readers.
		return media.WithFmtpParam(f, "level-asymmetry-allowed", "")
	case c.Is(media.MimeH265):
		f := c.Fmtp
		for _, p := range []struct {
			key string
			val []byte
		}{{"sprop-vps", ps.VPS}, {"sprop-sps", ps.SPS}, {"sprop-pps", ps.PPS}} {
			if p.val != nil {
				f = media.WithFmtpParam(f, p.key, b64(p.val))
			}
		}
		return f
	}
	return c.Fmtp
}
