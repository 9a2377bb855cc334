package groups

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The hottest mirror messages have a binary encoding of their own: a
// connection server relays every vote its links cast within one flush as
// one OpVotes message, and the application tier answers each such batch,
// once its votes are durable, within one OpCommitted message per
// connection server and commit; the connection server then acknowledges
// the batch's votes itself. Messages to many links (OpSends) are binary too.
// All are read in place (no JSON, no allocation per record); every other op
// stays JSON. A binary message starts with a zero byte, which JSON never
// does.
//
//	votes:     0x00 'V' 0x02, conn, batch (uvarint, > 0), then per vote: link, poll, choice (uvarint), id
//	           0x00 'V' 0x01, conn, then per vote: link, uid, poll, choice, id: a batch without a number, whose votes are acked one by one (OpSends)
//	committed: 0x00 'C' 0x01, then per batch: batch (uvarint, > 0), refused count (uvarint), refused vote indexes (uvarint gaps: first index, then next - previous - 1)
//	sends:     0x00 'S' 0x01, then per message: link, flags (bit 0: critical, bit 1: may wait), payload
//
// Strings and payloads are a uvarint length and the bytes.
const (
	binaryMark    = 0x00
	kindVotes     = 'V'
	kindSends     = 'S'
	kindCommitted = 'C'
	batchVersion  = 1
	// votesNumbered is the version of a vote batch that carries its number.
	votesNumbered = 2
	batchHeader   = 3
)

// Limits a decoder holds records to: poll and vote ids are at most 64
// bytes at the client (control), sids and uids are short, and a message to
// one link is at most a few KB.
const (
	maxBatchString = 1024
	maxBatchChoice = 1 << 16
	maxSendPayload = 1 << 20
	// maxBatchVotes bounds a vote index in an OpCommitted message; the
	// connection server's batches are far smaller (maxUpVotes).
	maxBatchVotes = 1 << 20
)

// ClientVote is one vote relayed upward: the link and user it came from
// and the vote as the client sent it.
type ClientVote struct {
	Link   string
	UID    string // only in unnumbered batches (Batch 0)
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

// IsBatch reports whether data is a binary batch (OpVotes, OpCommitted or
// OpSends) rather than a JSON mirror message.
func IsBatch(data []byte) bool { return len(data) > 0 && data[0] == binaryMark }

// IsCommitted reports whether data is an OpCommitted batch.
func IsCommitted(data []byte) bool { return IsBatch(data) && len(data) > 1 && data[1] == kindCommitted }

// VoteBatch builds an OpVotes message record by record.
type VoteBatch struct {
	b        []byte
	n        int
	numbered bool // version 2: no uid, the application knows it from the link
}

// NewVoteBatch starts batch number batch of votes relayed by connection
// server conn. The application tier names the batch in an OpCommitted
// message once its votes are durable; 0 asks for an ack per vote instead.
// sizeHint is the expected number of votes.
func NewVoteBatch(conn string, batch uint64, sizeHint int) *VoteBatch {
	b := make([]byte, 0, batchHeader+1+len(conn)+binary.MaxVarintLen64+sizeHint*96)
	if batch == 0 {
		b = append(b, binaryMark, kindVotes, batchVersion)
		return &VoteBatch{b: appendString(b, conn)}
	}
	b = append(b, binaryMark, kindVotes, votesNumbered)
	b = appendString(b, conn)
	return &VoteBatch{b: binary.AppendUvarint(b, batch), numbered: true}
}

// Add appends one vote; poll and id are the bytes the client sent. A
// numbered batch leaves uid out: the application tier knows each link's
// user from its open.
func (v *VoteBatch) Add(link, uid string, poll []byte, choice int, id []byte) {
	v.b = appendString(v.b, link)
	if !v.numbered {
		v.b = appendString(v.b, uid)
	}
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
	Link, UID, Poll, ID []byte // UID: only in unnumbered batches
	Choice              int
}

// SendRef is a message to a link read in place from an OpSends message.
type SendRef struct {
	Link, Payload  []byte
	Critical, Wait bool
}

var errBatch = errors.New("mirror: malformed batch")

// DecodeVotes reads an OpVotes message: the relaying connection server,
// the batch's number (0: none, ack vote by vote) and its votes, appended to
// dst. It reads the whole message before returning, so a malformed one
// yields an error and no votes.
func DecodeVotes(data []byte, dst []VoteRef) (conn []byte, batch uint64, votes []VoteRef, err error) {
	r, version, err := batchReader(data, kindVotes, batchVersion, votesNumbered)
	if err != nil {
		return nil, 0, dst, err
	}
	if conn, err = r.str(); err != nil || len(conn) == 0 {
		return nil, 0, dst, fmt.Errorf("%w: votes without conn", errBatch)
	}
	if version == votesNumbered {
		if batch, err = r.uvarint(); err != nil || batch == 0 {
			return nil, 0, dst, fmt.Errorf("%w: numbered votes without a number", errBatch)
		}
	}
	n := len(dst)
	for len(r.b) > 0 {
		var v VoteRef
		var choice uint64
		v.Link, err = r.str()
		if err == nil && version != votesNumbered {
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
		if err == nil && (len(v.Link) == 0 || len(v.Poll) == 0) {
			err = fmt.Errorf("%w: vote without link or poll", errBatch)
		}
		if err == nil && choice >= maxBatchChoice {
			err = fmt.Errorf("%w: choice out of range", errBatch)
		}
		if err != nil {
			return nil, 0, dst[:n], err
		}
		v.Choice = int(choice)
		dst = append(dst, v)
	}
	return conn, batch, dst, nil
}

// CommittedBatch names a connection server's vote batch whose votes are
// durable: the connection server acknowledges each of them but those
// refused (indexes into the batch, increasing), which were answered with
// an error instead.
type CommittedBatch struct {
	Batch   uint64
	Refused []int
}

// Committed builds an OpCommitted message record by record.
type Committed struct {
	b []byte
}

// NewCommitted starts an OpCommitted message.
func NewCommitted() *Committed {
	return &Committed{b: append(make([]byte, 0, 64), binaryMark, kindCommitted, batchVersion)}
}

// Add appends one batch (number > 0) and its refused votes' indexes,
// which must increase.
func (c *Committed) Add(batch uint64, refused []int) {
	c.b = binary.AppendUvarint(c.b, batch)
	c.b = binary.AppendUvarint(c.b, uint64(len(refused)))
	prev := -1
	for _, i := range refused {
		c.b = binary.AppendUvarint(c.b, uint64(i-prev-1))
		prev = i
	}
}

// Bytes returns the message.
func (c *Committed) Bytes() []byte { return c.b }

// DecodeCommitted reads an OpCommitted message, appending its batches to
// dst; Refused is nil for a batch without refusals.
func DecodeCommitted(data []byte, dst []CommittedBatch) ([]CommittedBatch, error) {
	r, _, err := batchReader(data, kindCommitted, batchVersion, batchVersion)
	if err != nil {
		return dst, err
	}
	n := len(dst)
	for len(r.b) > 0 {
		var c CommittedBatch
		var count uint64
		c.Batch, err = r.uvarint()
		if err == nil && c.Batch == 0 {
			err = fmt.Errorf("%w: batch number 0", errBatch)
		}
		if err == nil {
			count, err = r.uvarint()
		}
		if err == nil && count > min(maxBatchVotes, uint64(len(r.b))) {
			err = fmt.Errorf("%w: %d refused votes", errBatch, count)
		}
		if err == nil && count > 0 {
			c.Refused = make([]int, 0, count)
			next := uint64(0)
			for range count {
				var gap uint64
				if gap, err = r.uvarint(); err != nil {
					break
				}
				if gap >= maxBatchVotes || next+gap >= maxBatchVotes {
					err = fmt.Errorf("%w: refused vote index out of range", errBatch)
					break
				}
				c.Refused = append(c.Refused, int(next+gap))
				next += gap + 1
			}
		}
		if err != nil {
			return dst[:n], err
		}
		dst = append(dst, c)
	}
	return dst, nil
}

// DecodeSends reads an OpSends message, appending its records to dst.
func DecodeSends(data []byte, dst []SendRef) ([]SendRef, error) {
	r, _, err := batchReader(data, kindSends, batchVersion, batchVersion)
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

// batchReader checks a batch's header: its kind, and a version from
// oldest to newest.
func batchReader(data []byte, kind, oldest, newest byte) (reader, byte, error) {
	if len(data) < batchHeader || data[0] != binaryMark {
		return reader{}, 0, fmt.Errorf("%w: not a binary batch", errBatch)
	}
	if data[1] != kind {
		return reader{}, 0, fmt.Errorf("%w: kind %q, want %q", errBatch, data[1], kind)
	}
	if data[2] < oldest || data[2] > newest {
		return reader{}, 0, fmt.Errorf("%w: version %d", errBatch, data[2])
	}
	return reader{data[batchHeader:]}, data[2], nil
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

// Votes returns a batch message relaying votes from connection server
// conn, numbered batch (0: none, see NewVoteBatch).
func Votes(conn string, batch uint64, votes []ClientVote) Mirror {
	return Mirror{Op: OpVotes, Conn: conn, Batch: batch, Votes: votes}
}

// CommittedBatches returns a message naming vote batches whose votes are
// durable.
func CommittedBatches(batches []CommittedBatch) Mirror {
	return Mirror{Op: OpCommitted, Committed: batches}
}

// Sends returns a batch message carrying messages to links.
func Sends(sends []LinkSend) Mirror { return Mirror{Op: OpSends, Sends: sends} }

func (m Mirror) encodeBatch() []byte {
	switch m.Op {
	case OpVotes:
		b := NewVoteBatch(m.Conn, m.Batch, len(m.Votes))
		for _, v := range m.Votes {
			b.Add(v.Link, v.UID, []byte(v.Poll), v.Choice, []byte(v.ID))
		}
		return b.Bytes()
	case OpCommitted:
		c := NewCommitted()
		for _, b := range m.Committed {
			c.Add(b.Batch, b.Refused)
		}
		return c.Bytes()
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
		conn, batch, refs, err := DecodeVotes(data, nil)
		if err != nil {
			return Mirror{}, err
		}
		m := Mirror{Op: OpVotes, Conn: string(conn), Batch: batch, Votes: make([]ClientVote, len(refs))}
		for i, r := range refs {
			m.Votes[i] = ClientVote{Link: string(r.Link), UID: string(r.UID), Poll: string(r.Poll), Choice: r.Choice, ID: string(r.ID)}
		}
		return m, nil
	case kindCommitted:
		batches, err := DecodeCommitted(data, nil)
		if err != nil {
			return Mirror{}, err
		}
		return Mirror{Op: OpCommitted, Committed: batches}, nil
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
