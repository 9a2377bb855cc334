package groups

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// MirrorOp names a mirror protocol message.
type MirrorOp string

// Upward ops travel from connection servers to the application tier; downward
// ops from the application tier to connection servers.
const (
	// Upward.
	OpLinkOpened    MirrorOp = "open"   // Conn, Link, UID, Facts, Attrs (conn)
	OpLinkClosed    MirrorOp = "closed" // Conn, Link, Code, Reason
	OpClientMessage MirrorOp = "client" // Conn, Link, UID, Type, Payload (the client frame)
	OpVotes         MirrorOp = "votes"  // Conn, Batch, Votes: a connection server's votes of one flush (binary, see batch.go)

	// Downward.
	OpSetAttrs  MirrorOp = "attrs"     // Link, Attrs (merged; "" removes)
	OpDefine    MirrorOp = "define"    // Group, Pred
	OpUndefine  MirrorOp = "undefine"  // Group
	OpSendLink  MirrorOp = "send"      // Link, Payload (a server message without seq), Critical
	OpSendGroup MirrorOp = "publish"   // Group, Payload (final bytes, g/off/ep included), Critical
	OpCloseLink MirrorOp = "close"     // Link, Code, Reason
	OpSends     MirrorOp = "sends"     // Sends: messages to many links, such as acks of votes relayed one by one (binary, see batch.go)
	OpCommitted MirrorOp = "committed" // Committed: vote batches now durable, the connection server acks their votes (binary, see batch.go)
)

// Facts are the raw facts a connection server records about a link when it
// says hello; the application tier derives attributes from them.
type Facts struct {
	IP             string            `json:"ip"`
	UserAgent      string            `json:"ua,omitempty"`
	ClientHints    map[string]string `json:"hints,omitempty"` // Sec-CH-UA* request headers, lower-case names
	AcceptLanguage string            `json:"accept_language,omitempty"`
	Origin         string            `json:"origin,omitempty"`
	Hello          json.RawMessage   `json:"hello,omitempty"` // the hello frame as the client sent it
	OpenedAt       time.Time         `json:"opened_at"`
}

// Mirror is one message of the mirror protocol between the tiers. Which
// fields are set depends on Op (see the Op constants). A message is encoded
// once, and the same bytes may be published to many topics.
type Mirror struct {
	Op        MirrorOp         `json:"op"`
	Conn      string           `json:"conn,omitempty"`
	Link      string           `json:"link,omitempty"`
	UID       string           `json:"uid,omitempty"`
	Type      string           `json:"type,omitempty"`
	Streams   []string         `json:"streams,omitempty"` // OpLinkOpened: streams the viewer JWT allows; nil = any
	Facts     *Facts           `json:"facts,omitempty"`
	Attrs     Attrs            `json:"attrs,omitempty"`
	Group     string           `json:"group,omitempty"`
	Pred      *Predicate       `json:"pred,omitempty"`
	Critical  bool             `json:"critical,omitempty"`
	Code      int              `json:"code,omitempty"`
	Reason    string           `json:"reason,omitempty"`
	Payload   json.RawMessage  `json:"payload,omitempty"`
	Batch     uint64           `json:"-"` // OpVotes: the batch's number, 0 for none
	Votes     []ClientVote     `json:"-"` // OpVotes
	Committed []CommittedBatch `json:"-"` // OpCommitted
	Sends     []LinkSend       `json:"-"` // OpSends
}

// LinkOpened announces a new link, its raw facts and the streams its
// identity is restricted to (nil = any).
func LinkOpened(conn, link, uid string, streams []string, facts Facts, attrs Attrs) Mirror {
	return Mirror{Op: OpLinkOpened, Conn: conn, Link: link, UID: uid, Streams: streams, Facts: &facts, Attrs: attrs}
}

// LinkClosed announces that a link is gone.
func LinkClosed(conn, link string, code int, reason string) Mirror {
	return Mirror{Op: OpLinkClosed, Conn: conn, Link: link, Code: code, Reason: reason}
}

// ClientMessage relays one validated client frame of the given type.
func ClientMessage(conn, link, uid, typ string, frame []byte) Mirror {
	return Mirror{Op: OpClientMessage, Conn: conn, Link: link, UID: uid, Type: typ, Payload: frame}
}

// SetAttrs merges attributes into a link's profile on the connection server.
func SetAttrs(link string, attrs Attrs) Mirror {
	return Mirror{Op: OpSetAttrs, Link: link, Attrs: attrs}
}

// DefineGroup defines (or redefines) a custom group.
func DefineGroup(g Group) Mirror { return Mirror{Op: OpDefine, Group: g.ID, Pred: g.Pred} }

// UndefineGroup removes a custom group.
func UndefineGroup(id string) Mirror { return Mirror{Op: OpUndefine, Group: id} }

// SendLink sends a server message to one link; the connection server adds
// the link's seq. Critical messages are never dropped while the link lives.
func SendLink(link string, msg []byte, critical bool) Mirror {
	return Mirror{Op: OpSendLink, Link: link, Payload: msg, Critical: critical}
}

// SendGroup sends the same bytes to every member of a group.
func SendGroup(group string, msg []byte, critical bool) Mirror {
	return Mirror{Op: OpSendGroup, Group: group, Payload: msg, Critical: critical}
}

// CloseLink closes a link with a WebSocket close code and reason.
func CloseLink(link string, code int, reason string) Mirror {
	return Mirror{Op: OpCloseLink, Link: link, Code: code, Reason: reason}
}

// Encode returns the wire form of m: JSON, or the binary batch encoding
// for OpVotes, OpCommitted and OpSends.
func (m Mirror) Encode() []byte {
	if m.isBatch() {
		return m.encodeBatch()
	}
	b, err := json.Marshal(m)
	if err != nil {
		// Only an invalid Payload can fail; callers build payloads with
		// encoders that produce valid JSON, so this is a programming error.
		panic(fmt.Sprintf("groups: encoding mirror message: %v", err))
	}
	return b
}

// DecodeMirror parses and checks one mirror message, JSON or binary batch.
// The hot paths read batches in place instead (DecodeVotes, DecodeCommitted,
// DecodeSends).
func DecodeMirror(data []byte) (Mirror, error) {
	if IsBatch(data) {
		return decodeBatch(data)
	}
	var m Mirror
	if err := json.Unmarshal(data, &m); err != nil {
		return Mirror{}, fmt.Errorf("mirror: %w", err)
	}
	if m.isBatch() {
		return Mirror{}, fmt.Errorf("mirror: %s messages are binary batches", m.Op)
	}
	return m, m.Check()
}

func (m Mirror) isBatch() bool { return m.Op == OpVotes || m.Op == OpCommitted || m.Op == OpSends }

// Check verifies that the fields Op requires are present and well formed.
func (m Mirror) Check() error {
	need := func(ok bool, what string) error {
		if !ok {
			return fmt.Errorf("mirror: %s message without %s", m.Op, what)
		}
		return nil
	}
	switch m.Op {
	case OpLinkOpened:
		return errors.Join(need(m.Conn != "", "conn"), need(m.Link != "", "link"), need(m.Facts != nil, "facts"))
	case OpLinkClosed:
		return errors.Join(need(m.Conn != "", "conn"), need(m.Link != "", "link"))
	case OpClientMessage:
		return errors.Join(need(m.Conn != "", "conn"), need(m.Link != "", "link"), need(m.Type != "", "type"), need(len(m.Payload) > 0, "payload"))
	case OpSetAttrs:
		if err := errors.Join(need(m.Link != "", "link"), need(len(m.Attrs) > 0, "attrs")); err != nil {
			return err
		}
		return CheckAttrs(m.Attrs)
	case OpDefine:
		if err := errors.Join(need(m.Group != "", "group"), need(m.Pred != nil, "pred")); err != nil {
			return err
		}
		if err := ValidCustomID(m.Group); err != nil {
			return fmt.Errorf("mirror: %w", err)
		}
		return m.Pred.Validate()
	case OpUndefine:
		return need(m.Group != "", "group")
	case OpSendLink:
		return errors.Join(need(m.Link != "", "link"), need(len(m.Payload) > 0, "payload"))
	case OpSendGroup:
		return errors.Join(need(m.Group != "", "group"), need(len(m.Payload) > 0, "payload"))
	case OpCloseLink:
		return need(m.Link != "", "link")
	case OpVotes:
		return need(m.Conn != "", "conn")
	case OpSends, OpCommitted:
		return nil
	case "":
		return errors.New("mirror: message without op")
	}
	return fmt.Errorf("mirror: unknown op %q", m.Op)
}
