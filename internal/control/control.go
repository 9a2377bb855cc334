// Package control defines the control-link protocol between a viewer's
// player and a connection server: JSON text frames {"t": type, …}, strict
// decoding of what clients send, encoding of what servers send (group
// messages encoded once with g/off/ep, per-link messages stamped with seq),
// close codes and limits. docs/protocol.md describes it for player authors.
package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// MaxFrame is the largest client frame accepted, in bytes.
const MaxFrame = 16 << 10

// Client → server message types.
const (
	TypeHello     = "hello"
	TypeWatch     = "watch"
	TypeTelemetry = "telemetry"
	TypeVote      = "vote"
	TypeResume    = "resume"
)

// Server → client message types.
const (
	TypeWelcome      = "welcome"
	TypeEndpoint     = "endpoint"
	TypeStreamStatus = "stream-status"
	TypePoll         = "poll"
	TypeResults      = "results"
	TypeNotice       = "notice"
	TypeBranding     = "branding"
	TypeRedirect     = "redirect"
	TypeAck          = "ack"
	TypeError        = "error"
)

// WebSocket close codes a connection server uses. 1xxx are RFC 6455 codes;
// 4xxx are Backchannel's own.
const (
	CloseNormal          = 1000 // the application closed the link
	CloseGoingAway       = 1001 // server shutting down
	CloseUnsupportedData = 1003 // binary frame
	CloseInvalidPayload  = 1007 // malformed JSON or a field of the wrong type or range
	ClosePolicyViolation = 1008 // origin or other policy
	CloseTooBig          = 1009 // frame larger than MaxFrame
	CloseInternalError   = 1011
	CloseHelloTimeout    = 4001 // no hello within the deadline
	CloseProtocolError   = 4002 // hello not first, or hello twice
	CloseUnknownType     = 4003 // unknown "t"
	CloseRateLimited     = 4008 // client sent faster than its rate limit
	CloseSlowConsumer    = 4009 // client did not read fast enough; send queue overflowed
	CloseKicked          = 4010 // closed by the application tier
)

// Error codes carried by an error message.
const (
	ErrCodeBadStream   = "bad_stream"
	ErrCodeUnknownPoll = "unknown_poll"
	ErrCodeUnavailable = "unavailable"
	ErrCodeForbidden   = "forbidden_stream"
)

// Decoding errors, wrapped with details. Each maps to a close code.
var (
	ErrFrameTooBig = errors.New("frame too big")
	ErrMalformed   = errors.New("malformed message")
	ErrUnknownType = errors.New("unknown message type")
)

// CloseCodeFor returns the close code for a DecodeClient error.
func CloseCodeFor(err error) int {
	switch {
	case errors.Is(err, ErrFrameTooBig):
		return CloseTooBig
	case errors.Is(err, ErrUnknownType):
		return CloseUnknownType
	default:
		return CloseInvalidPayload
	}
}

// Hello is the first frame of every link.
type Hello struct {
	Token  string  `json:"token,omitempty"` // viewer JWT or a previous welcome's token
	UA     string  `json:"ua,omitempty"`    // navigator.userAgent
	Lang   string  `json:"lang,omitempty"`  // navigator.language, BCP 47
	Screen *Screen `json:"screen,omitempty"`
	Net    *Net    `json:"net,omitempty"`
	Player string  `json:"player,omitempty"` // player name/version
}

// Screen describes the viewer's display.
type Screen struct {
	W   int     `json:"w"`
	H   int     `json:"h"`
	DPR float64 `json:"dpr,omitempty"`
}

// Net is what the Network Information API tells the player.
type Net struct {
	Type      string  `json:"type,omitempty"`      // wifi, cellular, ethernet, …
	Effective string  `json:"effective,omitempty"` // effectiveType: slow-2g, 2g, 3g, 4g
	Downlink  float64 `json:"downlink,omitempty"`  // Mbit/s
	RTT       float64 `json:"rtt,omitempty"`       // ms
}

// Watch asks for a stream's playback endpoint.
type Watch struct {
	Stream string `json:"stream"`
}

// Telemetry is one report; counters are deltas over the interval IV (ms).
// Gauges are pointers so that "not measured" differs from zero.
type Telemetry struct {
	SN     uint64    `json:"sn"`
	IV     float64   `json:"iv"`
	Sta    string    `json:"sta,omitempty"` // p playing, r rebuffering, w waiting, a paused, e ended/error, f fatal
	BL     *float64  `json:"bl,omitempty"`  // buffer length, ms
	MTP    *float64  `json:"mtp,omitempty"` // measured throughput, kbps
	PB     *float64  `json:"pb,omitempty"`  // playback bitrate, kbps
	LTC    *float64  `json:"ltc,omitempty"` // live latency, ms
	MSD    *float64  `json:"msd,omitempty"` // startup delay, ms; once per session
	PlayMS float64   `json:"play_ms"`       // time spent playing in the interval
	RbN    float64   `json:"rb_n"`          // rebuffer events in the interval
	RbMS   float64   `json:"rb_ms"`         // rebuffer time in the interval
	DFA    float64   `json:"dfa"`           // dropped frames in the interval
	Err    []string  `json:"err,omitempty"` // error codes seen in the interval
	RTC    *RTCStats `json:"rtc,omitempty"`
}

// RTCStats are WebRTC receiver statistics for the interval.
type RTCStats struct {
	FrzN  float64  `json:"frz_n"`            // freezes in the interval
	FrzMS float64  `json:"frz_ms"`           // freeze time in the interval
	Loss  *float64 `json:"loss,omitempty"`   // packets lost / (lost + received), 0..1
	JbdMS *float64 `json:"jbd_ms,omitempty"` // jitter-buffer delay, ms
	RttMS *float64 `json:"rtt_ms,omitempty"` // current round-trip time, ms
}

// Vote is a poll answer. The server answers ack {id} once it is counted.
type Vote struct {
	Poll   string `json:"poll"`
	Choice int    `json:"choice"`
	ID     string `json:"id"`
}

// Resume asks for the group messages missed since the given offsets.
type Resume struct {
	Sid     string            `json:"sid"`
	Offsets map[string]uint64 `json:"offsets,omitempty"` // group → offset of the last message received
	Epochs  map[string]string `json:"epochs,omitempty"`  // group → epoch of that offset
}

// ClientMessage is one decoded client frame; exactly one pointer is set.
type ClientMessage struct {
	Type      string
	Hello     *Hello
	Watch     *Watch
	Telemetry *Telemetry
	Vote      *Vote
	Resume    *Resume
}

// DecodeClient parses and checks one client frame. Unknown fields are
// ignored (newer players may send more); a missing or unknown "t", a field
// of the wrong JSON type, a missing required field or a value out of range
// is an error.
func DecodeClient(frame []byte) (ClientMessage, error) {
	if v, ok := ParseVote(frame); ok {
		return ClientMessage{Type: TypeVote, Vote: &Vote{Poll: string(v.Poll), Choice: v.Choice, ID: string(v.ID)}}, nil
	}
	return decodeClient(frame)
}

// decodeClient is DecodeClient through encoding/json, for every frame.
func decodeClient(frame []byte) (ClientMessage, error) {
	if len(frame) > MaxFrame {
		return ClientMessage{}, fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooBig, len(frame), MaxFrame)
	}
	var head struct {
		T *string `json:"t"`
	}
	if err := json.Unmarshal(frame, &head); err != nil {
		return ClientMessage{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if head.T == nil {
		return ClientMessage{}, fmt.Errorf("%w: no \"t\"", ErrMalformed)
	}
	m := ClientMessage{Type: *head.T}
	var target any
	switch m.Type {
	case TypeHello:
		m.Hello = new(Hello)
		target = m.Hello
	case TypeWatch:
		m.Watch = new(Watch)
		target = m.Watch
	case TypeTelemetry:
		m.Telemetry = new(Telemetry)
		target = m.Telemetry
	case TypeVote:
		m.Vote = new(Vote)
		target = m.Vote
	case TypeResume:
		m.Resume = new(Resume)
		target = m.Resume
	default:
		return ClientMessage{}, fmt.Errorf("%w %q", ErrUnknownType, truncate(m.Type, 32))
	}
	if err := json.Unmarshal(frame, target); err != nil {
		return ClientMessage{}, fmt.Errorf("%w: %s: %v", ErrMalformed, m.Type, err)
	}
	if err := m.check(); err != nil {
		return ClientMessage{}, fmt.Errorf("%w: %s: %v", ErrMalformed, m.Type, err)
	}
	return m, nil
}

func (m ClientMessage) check() error {
	switch {
	case m.Hello != nil:
		h := m.Hello
		if len(h.Token) > 4096 {
			return errors.New("token longer than 4096 bytes")
		}
		if len(h.UA) > 1024 || len(h.Lang) > 64 || len(h.Player) > 128 {
			return errors.New("ua, lang or player too long")
		}
		if h.Screen != nil && (h.Screen.W < 0 || h.Screen.H < 0 || h.Screen.DPR < 0) {
			return errors.New("negative screen size")
		}
		if h.Net != nil && (h.Net.Downlink < 0 || h.Net.RTT < 0 || len(h.Net.Type) > 32 || len(h.Net.Effective) > 32) {
			return errors.New("bad net")
		}
	case m.Watch != nil:
		if m.Watch.Stream == "" {
			return errors.New("stream missing")
		}
	case m.Telemetry != nil:
		return m.Telemetry.check()
	case m.Vote != nil:
		if m.Vote.Poll == "" || m.Vote.ID == "" {
			return errors.New("poll and id are required")
		}
		if len(m.Vote.Poll) > 64 || len(m.Vote.ID) > 64 || m.Vote.Choice < 0 {
			return errors.New("poll or id too long, or negative choice")
		}
	case m.Resume != nil:
		if m.Resume.Sid == "" {
			return errors.New("sid missing")
		}
	}
	return nil
}

func (t *Telemetry) check() error {
	if t.IV <= 0 || t.IV > 300_000 {
		return fmt.Errorf("iv %v out of range (0, 300000]", t.IV)
	}
	if len(t.Sta) > 8 {
		return errors.New("sta too long")
	}
	for name, v := range map[string]*float64{"bl": t.BL, "mtp": t.MTP, "pb": t.PB, "ltc": t.LTC, "msd": t.MSD} {
		if v != nil && *v < 0 {
			return fmt.Errorf("%s is negative", name)
		}
	}
	if t.PlayMS < 0 || t.RbN < 0 || t.RbMS < 0 || t.DFA < 0 {
		return errors.New("negative counter")
	}
	if len(t.Err) > 32 {
		return errors.New("more than 32 errors")
	}
	if r := t.RTC; r != nil {
		if r.FrzN < 0 || r.FrzMS < 0 {
			return errors.New("negative freeze counter")
		}
		if r.Loss != nil && (*r.Loss < 0 || *r.Loss > 1) {
			return fmt.Errorf("rtc.loss %v outside 0..1", *r.Loss)
		}
		if (r.JbdMS != nil && *r.JbdMS < 0) || (r.RttMS != nil && *r.RttMS < 0) {
			return errors.New("negative rtc delay")
		}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// ServerMessage is a message a server sends to clients.
type ServerMessage interface {
	MessageType() string
}

// Welcome answers hello.
type Welcome struct {
	Sid       string `json:"sid"`
	UID       string `json:"uid"`
	Token     string `json:"token"`
	Recovered *bool  `json:"recovered,omitempty"`
}

// Endpoint tells the player where to play a stream from.
type Endpoint struct {
	Stream string `json:"stream"`
	WHEP   string `json:"whep"`
	HLS    string `json:"hls"`
	Edge   string `json:"edge"`
	Audio  string `json:"audio,omitempty"` // why the audio track is not playable over WebRTC, when it is not
}

// Stream states.
const (
	StateLive    = "live"
	StateOffline = "offline"
)

// StreamStatus says whether a stream is on air.
type StreamStatus struct {
	Stream string `json:"stream"`
	State  string `json:"state"`
}

// Notice is a text shown to the viewer.
type Notice struct {
	Text  string `json:"text"`
	Level string `json:"level,omitempty"` // info, warning
}

// Redirect moves the player to another endpoint.
type Redirect struct {
	Stream string `json:"stream"`
	WHEP   string `json:"whep"`
	HLS    string `json:"hls"`
	Edge   string `json:"edge"`
	Reason string `json:"reason"`
}

// Ack acknowledges a client message that carried an id.
type Ack struct {
	ID string `json:"id"`
}

// Error reports a problem with a client request; the link stays open.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	ID      string `json:"id,omitempty"`
}

func (Welcome) MessageType() string      { return TypeWelcome }
func (Endpoint) MessageType() string     { return TypeEndpoint }
func (StreamStatus) MessageType() string { return TypeStreamStatus }
func (Notice) MessageType() string       { return TypeNotice }
func (Redirect) MessageType() string     { return TypeRedirect }
func (Ack) MessageType() string          { return TypeAck }
func (Error) MessageType() string        { return TypeError }

// Encode returns {"t":type,…fields} for a message to one link. The
// connection server adds the link's seq with WithSeq.
func Encode(m ServerMessage) []byte {
	return encode(m, nil)
}

// EncodeGroup returns the bytes every member of group g receives:
// {"t":type,"g":g,"off":off,"ep":ep,…fields}. Encode once, send to all.
func EncodeGroup(m ServerMessage, g string, off uint64, ep string) []byte {
	var head bytes.Buffer
	head.WriteString(`,"g":`)
	writeString(&head, g)
	head.WriteString(`,"off":`)
	head.WriteString(strconv.FormatUint(off, 10))
	head.WriteString(`,"ep":`)
	writeString(&head, ep)
	return encode(m, head.Bytes())
}

func encode(m ServerMessage, extra []byte) []byte {
	body, err := json.Marshal(m)
	if err != nil || len(body) < 2 || body[0] != '{' {
		// Server message types are plain structs of strings, numbers and
		// bools; failing here is a programming error.
		panic(fmt.Sprintf("control: encoding %T: %v", m, err))
	}
	var b bytes.Buffer
	b.Grow(len(body) + len(extra) + 24)
	b.WriteString(`{"t":`)
	writeString(&b, m.MessageType())
	b.Write(extra)
	if len(body) > 2 {
		b.WriteByte(',')
	}
	b.Write(body[1:])
	return b.Bytes()
}

func writeString(b *bytes.Buffer, s string) {
	q, _ := json.Marshal(s)
	b.Write(q)
}

// WithSeq returns msg (a JSON object) with "seq":seq appended.
func WithSeq(msg []byte, seq uint64) []byte {
	n := len(msg)
	if n < 2 || msg[n-1] != '}' {
		return msg
	}
	out := make([]byte, 0, n+24)
	out = append(out, msg[:n-1]...)
	if n > 2 {
		out = append(out, ',')
	}
	out = append(out, `"seq":`...)
	out = strconv.AppendUint(out, seq, 10)
	return append(out, '}')
}
