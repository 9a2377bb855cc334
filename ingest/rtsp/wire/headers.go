package wire

import (
	"fmt"
	"strconv"
	"strings"
)

// Transport is one transport specification of a Transport header
// (RFC 2326 §12.39): how RTP and RTCP of one track travel.
type Transport struct {
	// Profile is "RTP/AVP" (or "RTP/AVPF", "RTP/SAVP"…); only RTP/AVP is
	// served.
	Profile string
	// TCP is true for RTP/AVP/TCP: interleaved on the RTSP connection.
	TCP       bool
	Multicast bool
	// Interleaved holds the RTP and RTCP channel numbers (TCP); -1 when
	// absent.
	Interleaved [2]int
	// ClientPort and ServerPort hold RTP and RTCP ports (UDP); 0 when
	// absent.
	ClientPort [2]int
	ServerPort [2]int
	// Mode is "play" or "record" (lower case); "" when absent (play).
	Mode        string
	SSRC        string
	Destination string
	Source      string
}

// ParseTransports parses a Transport header: alternatives separated by
// commas, in the client's order of preference.
func ParseTransports(v string) ([]Transport, error) {
	var out []Transport
	for spec := range strings.SplitSeq(v, ",") {
		spec = strings.TrimSpace(spec)
		if spec == "" {
			continue
		}
		t, err := ParseTransport(spec)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
		if len(out) > 16 {
			return nil, errorf(StatusBadRequest, "too many transport alternatives")
		}
	}
	if len(out) == 0 {
		return nil, errorf(StatusBadRequest, "empty Transport header")
	}
	return out, nil
}

// ParseTransport parses one transport specification.
func ParseTransport(spec string) (Transport, error) {
	t := Transport{Interleaved: [2]int{-1, -1}}
	parts := strings.Split(spec, ";")
	proto := strings.ToUpper(strings.TrimSpace(parts[0]))
	fields := strings.Split(proto, "/")
	if len(fields) < 2 || len(fields) > 3 || fields[0] != "RTP" {
		return t, errorf(StatusUnsupportedTransport, "unsupported transport %q", truncate(parts[0]))
	}
	t.Profile = fields[0] + "/" + fields[1]
	if len(fields) == 3 {
		switch fields[2] {
		case "TCP":
			t.TCP = true
		case "UDP":
		default:
			return t, errorf(StatusUnsupportedTransport, "unsupported lower transport %q", truncate(fields[2]))
		}
	}
	for _, p := range parts[1:] {
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		k = strings.ToLower(strings.TrimSpace(k))
		v = strings.Trim(strings.TrimSpace(v), `"`)
		var err error
		switch k {
		case "unicast":
			t.Multicast = false
		case "multicast":
			t.Multicast = true
		case "interleaved":
			t.Interleaved, err = parseRange(v, 0, 255)
		case "client_port":
			t.ClientPort, err = parseRange(v, 1, 65535)
		case "server_port":
			t.ServerPort, err = parseRange(v, 1, 65535)
		case "mode":
			t.Mode = strings.ToLower(v)
		case "ssrc":
			t.SSRC = v
		case "destination":
			t.Destination = v
		case "source":
			t.Source = v
		}
		if err != nil {
			return t, errorf(StatusBadRequest, "transport %s: %v", k, err)
		}
	}
	return t, nil
}

// parseRange parses "a-b" or "a" (then b = a+1), both within [min, max].
func parseRange(v string, min, max int) ([2]int, error) {
	a, b, hasB := strings.Cut(v, "-")
	x, err := strconv.Atoi(strings.TrimSpace(a))
	if err != nil || x < min || x > max {
		return [2]int{}, fmt.Errorf("bad value %q", truncate(v))
	}
	y := x + 1
	if y > max {
		y = max
	}
	if hasB {
		y, err = strconv.Atoi(strings.TrimSpace(b))
		if err != nil || y < min || y > max {
			return [2]int{}, fmt.Errorf("bad value %q", truncate(v))
		}
	}
	return [2]int{x, y}, nil
}

// String formats the transport for a SETUP request or response.
func (t Transport) String() string {
	var b strings.Builder
	profile := t.Profile
	if profile == "" {
		profile = "RTP/AVP"
	}
	b.WriteString(profile)
	if t.TCP {
		b.WriteString("/TCP")
	}
	if t.Multicast {
		b.WriteString(";multicast")
	} else {
		b.WriteString(";unicast")
	}
	if t.Destination != "" {
		b.WriteString(";destination=" + t.Destination)
	}
	if t.Source != "" {
		b.WriteString(";source=" + t.Source)
	}
	if t.Interleaved[0] >= 0 && t.TCP {
		fmt.Fprintf(&b, ";interleaved=%d-%d", t.Interleaved[0], t.Interleaved[1])
	}
	if t.ClientPort[0] > 0 {
		fmt.Fprintf(&b, ";client_port=%d-%d", t.ClientPort[0], t.ClientPort[1])
	}
	if t.ServerPort[0] > 0 {
		fmt.Fprintf(&b, ";server_port=%d-%d", t.ServerPort[0], t.ServerPort[1])
	}
	if t.SSRC != "" {
		b.WriteString(";ssrc=" + t.SSRC)
	}
	if t.Mode != "" {
		b.WriteString(";mode=" + t.Mode)
	}
	return b.String()
}

// Session is a Session header: the id and the timeout in seconds (0 when
// not given).
type Session struct {
	ID      string
	Timeout int
}

// ParseSession parses "id" or "id;timeout=60".
func ParseSession(v string) (Session, error) {
	id, params, _ := strings.Cut(v, ";")
	s := Session{ID: strings.TrimSpace(id)}
	if s.ID == "" || len(s.ID) > 128 {
		return s, errorf(StatusBadRequest, "malformed Session header %q", truncate(v))
	}
	for p := range strings.SplitSeq(params, ";") {
		k, val, _ := strings.Cut(strings.TrimSpace(p), "=")
		if strings.EqualFold(k, "timeout") {
			n, err := strconv.Atoi(strings.TrimSpace(val))
			if err == nil && n > 0 && n < 1<<20 {
				s.Timeout = n
			}
		}
	}
	return s, nil
}

// String formats the header.
func (s Session) String() string {
	if s.Timeout > 0 {
		return s.ID + ";timeout=" + strconv.Itoa(s.Timeout)
	}
	return s.ID
}

// RTPInfo is one entry of an RTP-Info header (RFC 2326 §12.33): the first
// packet a reader gets on a track.
type RTPInfo struct {
	URL     string
	Seq     uint16
	RTPTime uint32
	HasSeq  bool
	HasTime bool
}

// FormatRTPInfo formats an RTP-Info header.
func FormatRTPInfo(infos []RTPInfo) string {
	var parts []string
	for _, i := range infos {
		s := "url=" + i.URL
		if i.HasSeq {
			s += ";seq=" + strconv.Itoa(int(i.Seq))
		}
		if i.HasTime {
			s += ";rtptime=" + strconv.FormatUint(uint64(i.RTPTime), 10)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ",")
}
