package groups

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The two hottest mirror messages have a binary encoding of their own:
// a connection server relays every vote its links cast within one flush as
// one OpVotes message, and the application tier acknowledges every vote of
// one commit as one OpSends message per connection server. Both are batches
// read in place (no JSON, no allocation per record); every other op stays
// JSON. A binary message starts with a zero byte, which JSON never does.
//
//	votes: 0x00 'V' 0x01, conn, then per vote: link, uid, poll, choice (uvarint), id
//	sends: 0x00 'S' 0x01, then per message: link, flags (bit 0: critical, bit 1: may wait), payload
//
// Strings and payloads are a uvarint length and the bytes.
const (
	binaryMark   = 0x00
	kindVotes    = 'V'
	kindSends    = 'S'
	batchVersion = 1
	batchHeader  = 3
)

// Limits a decoder holds records to: poll and vote ids are at most 64
// bytes at the client (control), sids and uids are short, and a message to
// one link is at most a few KB.
const (
	maxBatchString = 1024
	maxBatchChoice = 1 << 16
	maxSendPayload = 1 << 20
)

// ClientVote is one vote relayed upward: the link and user it came from
// and the vote as the client sent it.
type ClientVote struct {
	Link   string
	UID    string
	Poll   string
	Choice int
	ID     string
}

// LinkSend is one message to one link (as OpSendLink carries it).
type LinkSend struct {
	Link     string
	Payload  []byte // a server message without seq
	Critical bool
	// Wait lets the connection server hold a critical message briefly so
	// that it shares a write with others to the same link (acks).
	Wait bool
}

const (
	sendCritical = 1 << iota
	sendWait
)

// IsBatch reports whether data is a binary batch (OpVotes or OpSends)
// rather than a JSON mirror message.
func IsBatch(data []byte) bool { return len(data) > 0 && data[0] == binaryMark }

// VoteBatch builds an OpVotes message record by record.
type VoteBatch struct {
	b []byte
	n int
}

// NewVoteBatch starts a batch of votes relayed by connection server conn;
// sizeHint is the expected number of votes.
func NewVoteBatch(conn string, sizeHint int) *VoteBatch {
	b := make([]byte, 0, batchHeader+1+len(conn)+sizeHint*96)
	b = append(b, binaryMark, kindVotes, batchVersion)
	return &VoteBatch{b: appendString(b, conn)}
}

// Add appends one vote; poll and id are the bytes the client sent.
func (v *VoteBatch) Add(link, uid string, poll []byte, choice int, id []byte) {
	v.b = appendString(v.b, link)
	v.b = appendString(v.b, uid)
	v.b = appendBytes(v.b, poll)
	v.b = binary.AppendUvarint(v.b, uint64(choice))
	v.b = appendBytes(v.b, id)
	v.n++
}

// Len returns the number of votes added.
func (v *VoteBatch) Len() int { return v.n }

// Bytes returns the message. The batch must not be added to afterwards.
func (v *VoteBatch) Bytes() []byte { return v.b }

// SendBatch builds an OpSends message record by record.
type SendBatch struct {
	b []byte
	n int
}

// NewSendBatch starts a batch of messages to links.
func NewSendBatch(sizeHint int) *SendBatch {
	b := make([]byte, 0, batchHeader+sizeHint*64)
	return &SendBatch{b: append(b, binaryMark, kindSends, batchVersion)}
}

// Add appends one message to a link; payload is copied. wait implies
// critical (see LinkSend).
func (s *SendBatch) Add(link string, payload []byte, critical, wait bool) {
	s.b = appendString(s.b, link)
	var flags byte
	if critical || wait {
		flags |= sendCritical
	}
	if wait {
		flags |= sendWait
	}
	s.b = append(s.b, flags)
	s.b = appendBytes(s.b, payload)
	s.n++
}

// Len returns the number of messages added.
func (s *SendBatch) Len() int { return s.n }

// Bytes returns the message.
func (s *SendBatch) Bytes() []byte { return s.b }

// VoteRef is a vote read in place from an OpVotes message: the slices
// point into the message and are valid as long as it is.
type VoteRef struct {
	Link, UID, Poll, ID []byte
	Choice              int
}

// SendRef is a message to a link read in place from an OpSends message.
type SendRef struct {
	Link, Payload  []byte
	Critical, Wait bool
}

var errBatch = errors.New("mirror: malformed batch")

// DecodeVotes reads an OpVotes message: the relaying connection server and
// its votes, appended to dst. It reads the whole message before returning,
// so a malformed one yields an error and no votes.
func DecodeVotes(data []byte, dst []VoteRef) (conn []byte, votes []VoteRef, err error) {
	r, err := batchReader(data, kindVotes)
	if err != nil {
		return nil, dst, err
	}
	if conn, err = r.str(); err != nil || len(conn) == 0 {
		return nil, dst, fmt.Errorf("%w: votes without conn", errBatch)
	}
	n := len(dst)
	for len(r.b) > 0 {
		var v VoteRef
		var choice uint64
		v.Link, err = r.str()
		if err == nil {
			v.UID, err = r.str()
		}
		if err == nil {
			v.Poll, err = r.str()
		}
		if err == nil {
			choice, err = r.uvarint()
		}
		if err == nil {
			v.ID, err = r.str()
		}
		if err == nil && (len(v.Link) == 0 || len(v.Poll) == 0 || len(v.ID) == 0 || choice >= maxBatchChoice) {
			err = fmt.Errorf("%w: vote without link, poll or id, or choice out of range", errBatch)
		}
		if err != nil {
			return nil, dst[:n], err
		}
		v.Choice = int(choice)
		dst = append(dst, v)
	}
	return conn, dst, nil
}

// DecodeSends reads an OpSends message, appending its records to dst.
func DecodeSends(data []byte, dst []SendRef) ([]SendRef, error) {
	r, err := batchReader(data, kindSends)
	if err != nil {
		return dst, err
	}
	n := len(dst)
	for len(r.b) > 0 {
		var s SendRef
		s.Link, err = r.str()
		if err == nil && len(r.b) == 0 {
			err = errBatch
		}
		if err == nil {
			flags := r.b[0]
			r.b = r.b[1:]
			s.Critical, s.Wait = flags&sendCritical != 0, flags&sendWait != 0
			if flags&^(sendCritical|sendWait) != 0 || (s.Wait && !s.Critical) {
				err = fmt.Errorf("%w: unknown send flags %#x", errBatch, flags)
			}
		}
		if err == nil {
			s.Payload, err = r.payload()
		}
		if err == nil && (len(s.Link) == 0 || len(s.Payload) == 0) {
			err = fmt.Errorf("%w: send without link or payload", errBatch)
		}
		if err != nil {
			return dst[:n], err
		}
		dst = append(dst, s)
	}
	return dst, nil
}

type reader struct{ b []byte }

func batchReader(data []byte, kind byte) (reader, error) {
	if len(data) < batchHeader || data[0] != binaryMark {
		return reader{}, fmt.Errorf("%w: not a binary batch", errBatch)
	}
	if data[1] != kind {
		return reader{}, fmt.Errorf("%w: kind %q, want %q", errBatch, data[1], kind)
	}
	if data[2] != batchVersion {
		return reader{}, fmt.Errorf("%w: version %d", errBatch, data[2])
	}
	return reader{data[batchHeader:]}, nil
}

func (r *reader) uvarint() (uint64, error) {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		return 0, fmt.Errorf("%w: truncated", errBatch)
	}
	r.b = r.b[n:]
	return v, nil
}

func (r *reader) bytesOf(limit uint64) ([]byte, error) {
	n, err := r.uvarint()
	if err != nil {
		return nil, err
	}
	if n > limit {
		return nil, fmt.Errorf("%w: field of %d bytes", errBatch, n)
	}
	if n > uint64(len(r.b)) {
		return nil, fmt.Errorf("%w: truncated", errBatch)
	}
	s := r.b[:n:n]
	r.b = r.b[n:]
	return s, nil
}

func (r *reader) str() ([]byte, error)     { return r.bytesOf(maxBatchString) }
func (r *reader) payload() ([]byte, error) { return r.bytesOf(maxSendPayload) }

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b, s []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// Votes returns a batch message relaying votes from connection server conn.
func Votes(conn string, votes []ClientVote) Mirror {
	return Mirror{Op: OpVotes, Conn: conn, Votes: votes}
}

// Sends returns a batch message carrying messages to links.
func Sends(sends []LinkSend) Mirror { return Mirror{Op: OpSends, Sends: sends} }

func (m Mirror) encodeBatch() []byte {
	switch m.Op {
	case OpVotes:
		b := NewVoteBatch(m.Conn, len(m.Votes))
		for _, v := range m.Votes {
			b.Add(v.Link, v.UID, []byte(v.Poll), v.Choice, []byte(v.ID))
		}
		return b.Bytes()
	default:
		b := NewSendBatch(len(m.Sends))
		for _, s := range m.Sends {
			b.Add(s.Link, s.Payload, s.Critical, s.Wait)
		}
		return b.Bytes()
	}
}

func decodeBatch(data []byte) (Mirror, error) {
	if len(data) < batchHeader {
		return Mirror{}, fmt.Errorf("%w: not a binary batch", errBatch)
	}
	switch data[1] {
	case kindVotes:
		conn, refs, err := DecodeVotes(data, nil)
		if err != nil {
			return Mirror{}, err
		}
		m := Mirror{Op: OpVotes, Conn: string(conn), Votes: make([]ClientVote, len(refs))}
		for i, r := range refs {
			m.Votes[i] = ClientVote{Link: string(r.Link), UID: string(r.UID), Poll: string(r.Poll), Choice: r.Choice, ID: string(r.ID)}
		}
		return m, nil
	case kindSends:
		refs, err := DecodeSends(data, nil)
		if err != nil {
			return Mirror{}, err
		}
		m := Mirror{Op: OpSends, Sends: make([]LinkSend, len(refs))}
		for i, r := range refs {
			m.Sends[i] = LinkSend{Link: string(r.Link), Payload: append([]byte(nil), r.Payload...), Critical: r.Critical, Wait: r.Wait}
		}
		return m, nil
	}
	return Mirror{}, fmt.Errorf("%w: unknown kind %q", errBatch, data[1])
}
