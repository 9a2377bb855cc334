package store

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"

	"github.com/backchannel/backchannel/groups"
)

// File keeps state in memory and in an append-only log, state.log, in its
// directory. Writers hand records to one committer goroutine that writes
// whatever has accumulated and fsyncs once for all of them (group commit);
// each writer returns when its records are synced. At open the log is
// replayed and, when most of it is superseded, rewritten compactly.
//
// With an empty directory File is purely in memory (tests, and nothing
// else: the embedded deployment always has a data directory).
type File struct {
	path string
	log  *slog.Logger

	mu   sync.RWMutex
	docs map[string]map[string][]byte // kind → id → doc
	// poll → every vote saved, in order; a user's later vote supersedes
	// the earlier (latestVotes). Appending costs far less per vote than
	// a map that keeps only the latest: dedup is the tally's job while
	// the poll runs, and is redone here only on reading back.
	votes map[string]*voteList

	// Writers append encoded records to pending and wait on their channel
	// in waiters; the committer swaps pending with spare, writes, fsyncs
	// and answers them all.
	wmu      sync.Mutex
	f        logFile
	size     int64 // bytes of the log known to be synced
	broken   error // set when a failed write could not be undone
	pending  []byte
	spare    []byte
	waiters  []chan error
	dimsIDs  map[any]uint64 // Vote.AttrsKey → id of the dims record written for it
	nextDims uint64
	wake     chan struct{}
	done     chan struct{}
	closed   bool
	stopped  chan struct{}
}

// logFile is what the committer needs of the log (a test fails writes).
type logFile interface {
	io.WriteCloser
	Sync() error
	Truncate(size int64) error
}

// record is one line of the log.
type record struct {
	Op    string          `json:"op"` // put, del, vote, dims, dropvotes
	Kind  string          `json:"k,omitempty"`
	ID    string          `json:"id,omitempty"`
	Doc   json.RawMessage `json:"d,omitempty"`
	Raw   []byte          `json:"r,omitempty"` // a document that is not JSON
	Vote  *fileVote       `json:"v,omitempty"`
	Attrs groups.Attrs    `json:"a,omitempty"` // dims: the attributes that votes refer to by ID
}

// fileVote is a vote as the log holds it: with its attributes, or with
// the id of a dims record that holds them (written once for every vote
// with the same AttrsKey).
type fileVote struct {
	Poll   string       `json:"p"`
	User   string       `json:"u"`
	Choice int          `json:"c"`
	Attrs  groups.Attrs `json:"a,omitempty"`
	Dims   uint64       `json:"d,omitempty"`
}

const logName = "state.log"

// OpenFile opens (creating) the store in dir; "" keeps everything in memory.
func OpenFile(dir string, logger *slog.Logger) (*File, error) {
	if logger == nil {
		logger = slog.Default()
	}
	s := &File{
		log:     logger.With("component", "store"),
		docs:    make(map[string]map[string][]byte),
		votes:   make(map[string]*voteList),
		dimsIDs: make(map[any]uint64),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	if dir == "" {
		close(s.stopped)
		return s, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	s.path = filepath.Join(dir, logName)
	lines, err := s.replay()
	if err != nil {
		return nil, err
	}
	if live := s.liveRecords(); lines > 1024 && lines > 2*live {
		if err := s.compact(); err != nil {
			return nil, err
		}
	}
	f, err := os.OpenFile(s.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("store: %w", err)
	}
	s.f, s.size = f, st.Size()
	go s.committer()
	return s, nil
}

// replay applies the log to memory and returns how many records it held.
// A torn last line (a crash mid-write) is dropped and truncated away.
func (s *File) replay() (int, error) {
	f, err := os.OpenFile(s.path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return 0, fmt.Errorf("store: %w", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<16)
	var good int64
	n := 0
	dims := map[uint64]groups.Attrs{}
	for {
		line, err := r.ReadBytes('\n')
		if errors.Is(err, io.EOF) {
			if len(line) > 0 {
				s.log.Warn("dropping a torn record at the end of the log", "bytes", len(line))
				if terr := f.Truncate(good); terr != nil {
					return 0, fmt.Errorf("store: truncating a torn record: %w", terr)
				}
			}
			return n, nil
		}
		if err != nil {
			return 0, fmt.Errorf("store: reading %s: %w", s.path, err)
		}
		var rec record
		if err := json.Unmarshal(line, &rec); err != nil {
			return 0, fmt.Errorf("store: %s is corrupt at byte %d: %v", s.path, good, err)
		}
		switch {
		case rec.Op == "dims":
			id, _ := strconv.ParseUint(rec.ID, 10, 64)
			dims[id] = rec.Attrs
			s.nextDims = max(s.nextDims, id+1)
		case rec.Op == "vote" && rec.Vote != nil && rec.Vote.Dims != 0:
			a, ok := dims[rec.Vote.Dims]
			if !ok {
				// Only a failed write can leave a vote whose dims record
				// did not reach the disk: keep the vote, without them.
				s.log.Warn("a vote refers to unknown attributes", "dims", rec.Vote.Dims)
			}
			rec.Vote.Attrs = a
			s.apply(rec)
		default:
			s.apply(rec)
		}
		good += int64(len(line))
		n++
	}
}

func (s *File) apply(rec record) {
	switch rec.Op {
	case "put":
		m := s.docs[rec.Kind]
		if m == nil {
			m = make(map[string][]byte)
			s.docs[rec.Kind] = m
		}
		if rec.Raw != nil {
			m[rec.ID] = rec.Raw
		} else {
			m[rec.ID] = []byte(rec.Doc)
		}
	case "del":
		delete(s.docs[rec.Kind], rec.ID)
	case "vote":
		if v := rec.Vote; v != nil {
			s.applyVote(Vote{Poll: v.Poll, User: v.User, Choice: v.Choice, Attrs: v.Attrs})
		}
	case "dropvotes":
		delete(s.votes, rec.ID)
	}
}

func (s *File) applyVote(v Vote) {
	l := s.votes[v.Poll]
	if l == nil {
		l = &voteList{poll: v.Poll}
		s.votes[v.Poll] = l
	}
	l.add(v)
}

// voteList keeps a poll's votes in fixed-size chunks: appending never
// copies what is there (a slice doubling under a million votes would).
// A vote is kept without its poll (the list is the poll's): half the size
// of a Vote, and fewer pointers for the collector to follow.
type voteList struct {
	poll   string
	chunks [][]storedVote
	n      int
}

type storedVote struct {
	user   string
	attrs  groups.Attrs
	choice int
}

const voteChunk = 4096

func (l *voteList) add(v Vote) {
	if len(l.chunks) == 0 || len(l.chunks[len(l.chunks)-1]) == voteChunk {
		l.chunks = append(l.chunks, make([]storedVote, 0, voteChunk))
	}
	last := &l.chunks[len(l.chunks)-1]
	*last = append(*last, storedVote{user: v.User, attrs: v.Attrs, choice: v.Choice})
	l.n++
}

// all returns the votes, in order; callers hold s.mu (read).
func (l *voteList) all() []Vote {
	if l == nil {
		return nil
	}
	out := make([]Vote, 0, l.n)
	for _, c := range l.chunks {
		for _, v := range c {
			out = append(out, Vote{Poll: l.poll, User: v.user, Choice: v.choice, Attrs: v.attrs})
		}
	}
	return out
}

// latestVotes is each user's last vote of list, in the order of those.
func latestVotes(list []Vote) []Vote {
	last := make(map[string]int, len(list))
	for i := range list {
		last[list[i].User] = i
	}
	if len(last) == len(list) {
		return list
	}
	out := make([]Vote, 0, len(last))
	for i := range list {
		if last[list[i].User] == i {
			out = append(out, list[i])
		}
	}
	return out
}

func (s *File) liveRecords() int {
	n := 0
	for _, m := range s.docs {
		n += len(m)
	}
	for _, list := range s.votes {
		n += len(latestVotes(list.all()))
	}
	return n
}

// compact rewrites the log with only live records, atomically.
func (s *File) compact() error {
	tmp := s.path + ".compact"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	w := bufio.NewWriterSize(f, 1<<16)
	for kind, m := range s.docs {
		for id, doc := range m {
			w.Write(encodeRecord(putRecord(kind, id, doc)))
		}
	}
	// Votes with equal attributes share one dims record again.
	dims := map[string]uint64{}
	var line []byte
	for _, list := range s.votes {
		for _, v := range latestVotes(list.all()) {
			var id uint64
			if len(v.Attrs) > 0 {
				key := string(appendAttrs(nil, v.Attrs))
				var ok bool
				if id, ok = dims[key]; !ok {
					id = uint64(len(dims) + 1)
					dims[key] = id
					w.Write(appendDimsRecord(line[:0], id, v.Attrs))
				}
			}
			line = appendVoteRecord(line[:0], &v, id)
			w.Write(line)
		}
	}
	// Ids given out from now on must not meet the rewritten ones.
	s.nextDims = max(s.nextDims, uint64(len(dims)))
	err = errors.Join(w.Flush(), f.Sync(), f.Close())
	if err == nil {
		err = os.Rename(tmp, s.path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("store: compacting: %w", err)
	}
	return nil
}

func putRecord(kind, id string, doc []byte) record {
	if json.Valid(doc) {
		return record{Op: "put", Kind: kind, ID: id, Doc: compactJSON(doc)}
	}
	return record{Op: "put", Kind: kind, ID: id, Raw: doc}
}

func compactJSON(doc []byte) json.RawMessage {
	var b bytes.Buffer
	if json.Compact(&b, doc) != nil {
		return doc
	}
	return b.Bytes()
}

func encodeRecord(r record) []byte {
	b, _ := json.Marshal(r)
	return append(b, '\n')
}

// write appends records to the log and waits for their fsync.
func (s *File) write(ctx context.Context, data []byte) error {
	return s.writeWith(ctx, func(b []byte) []byte { return append(b, data...) })
}

// writeWith has encode append records to the pending log data (under the
// lock that orders them) and waits for their fsync.
func (s *File) writeWith(ctx context.Context, encode func([]byte) []byte) error {
	s.wmu.Lock()
	if s.closed {
		s.wmu.Unlock()
		return ErrClosed
	}
	if s.path == "" {
		s.wmu.Unlock()
		return nil
	}
	if s.broken != nil {
		s.wmu.Unlock()
		return s.broken
	}
	errc := make(chan error, 1)
	s.pending = encode(s.pending)
	s.waiters = append(s.waiters, errc)
	s.wmu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *File) committer() {
	defer close(s.stopped)
	for {
		select {
		case <-s.wake:
		case <-s.done:
			s.flush() // what was accepted before Close
			return
		}
		s.flush()
	}
}

func (s *File) flush() {
	s.wmu.Lock()
	if len(s.waiters) == 0 {
		// Nothing to write. Swapping buffers anyway would leave pending
		// and spare on one array, and the next flush would write the
		// bytes that writers are appending to.
		s.wmu.Unlock()
		return
	}
	b, waiters := s.pending, s.waiters
	s.pending, s.waiters, s.spare = s.spare[:0], nil, nil
	s.wmu.Unlock()
	_, err := s.f.Write(b)
	if err == nil {
		err = s.f.Sync()
	}
	var failed []chan error
	if err == nil {
		s.size += int64(len(b))
	} else {
		err = fmt.Errorf("store: writing %s: %w", s.path, err)
		s.log.Error("durable write failed", "err", err)
		// Cut what may have reached the file away, so that a retry
		// appends after the last synced record and not after a torn one.
		terr := s.f.Truncate(s.size)
		if terr == nil {
			terr = s.f.Sync()
		}
		s.wmu.Lock()
		if terr != nil {
			s.broken = fmt.Errorf("store: %s cannot be written after a failed write: %w", s.path, terr)
			s.log.Error("store is unusable", "err", s.broken)
		}
		// The dims records of what failed are not on disk: they are
		// written again for the votes that follow. Records encoded
		// since may refer to them, so they fail too, and are retried
		// (re-encoded) by their writers.
		clear(s.dimsIDs)
		failed = s.waiters
		s.pending, s.waiters = s.pending[:0], nil
		s.wmu.Unlock()
	}
	s.wmu.Lock()
	if cap(b) <= 64<<20 {
		s.spare = b[:0]
	}
	s.wmu.Unlock()
	for _, c := range waiters {
		c <- err
	}
	for _, c := range failed {
		c <- err
	}
}

// Put implements Store.
func (s *File) Put(ctx context.Context, kind, id string, doc []byte) error {
	rec := putRecord(kind, id, doc)
	if err := s.write(ctx, encodeRecord(rec)); err != nil {
		return err
	}
	s.mu.Lock()
	s.apply(record{Op: "put", Kind: kind, ID: id, Raw: bytes.Clone(doc)})
	s.mu.Unlock()
	return nil
}

// Delete implements Store.
func (s *File) Delete(ctx context.Context, kind, id string) error {
	if err := s.write(ctx, encodeRecord(record{Op: "del", Kind: kind, ID: id})); err != nil {
		return err
	}
	s.mu.Lock()
	s.apply(record{Op: "del", Kind: kind, ID: id})
	s.mu.Unlock()
	return nil
}

// List implements Store.
func (s *File) List(_ context.Context, kind string) (map[string][]byte, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[string][]byte, len(s.docs[kind]))
	for id, d := range s.docs[kind] {
		out[id] = bytes.Clone(d)
	}
	return out, nil
}

// SaveVotes implements Store.
func (s *File) SaveVotes(ctx context.Context, votes []Vote) error {
	if len(votes) == 0 {
		return nil
	}
	err := s.writeWith(ctx, func(b []byte) []byte {
		for i := range votes {
			v := &votes[i]
			var id uint64
			if v.AttrsKey != nil && len(v.Attrs) > 0 {
				var ok bool
				if id, ok = s.dimsIDs[v.AttrsKey]; !ok {
					s.nextDims++
					id = s.nextDims
					s.dimsIDs[v.AttrsKey] = id
					b = appendDimsRecord(b, id, v.Attrs)
				}
			}
			b = appendVoteRecord(b, v, id)
		}
		return b
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	for i := range votes {
		s.applyVote(votes[i])
	}
	s.mu.Unlock()
	return nil
}

// appendVoteRecord encodes a vote record as encodeRecord would, without
// reflection (votes are the bulk of the log): with the id of its dims
// record, or else with its attributes.
func appendVoteRecord(b []byte, v *Vote, dims uint64) []byte {
	b = append(b, `{"op":"vote","v":{"p":`...)
	b = appendJSONString(b, v.Poll)
	b = append(b, `,"u":`...)
	b = appendJSONString(b, v.User)
	b = append(b, `,"c":`...)
	b = strconv.AppendInt(b, int64(v.Choice), 10)
	switch {
	case dims != 0:
		b = append(b, `,"d":`...)
		b = strconv.AppendUint(b, dims, 10)
	case len(v.Attrs) > 0:
		b = append(b, `,"a":`...)
		b = appendAttrs(b, v.Attrs)
	}
	return append(b, "}}\n"...)
}

// appendDimsRecord encodes the attributes that votes refer to by id.
func appendDimsRecord(b []byte, id uint64, attrs groups.Attrs) []byte {
	b = append(b, `{"op":"dims","id":"`...)
	b = strconv.AppendUint(b, id, 10)
	b = append(b, `","a":`...)
	b = appendAttrs(b, attrs)
	return append(b, "}\n"...)
}

// appendAttrs encodes attributes as a JSON object in a fixed order, the
// built-in ones first.
func appendAttrs(b []byte, attrs groups.Attrs) []byte {
	b = append(b, '{')
	first := true
	add := func(k, val string) {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = appendJSONString(b, k)
		b = append(b, ':')
		b = appendJSONString(b, val)
	}
	n := 0
	for _, k := range groups.KnownAttrs {
		if val, ok := attrs[k]; ok {
			add(k, val)
			n++
		}
	}
	if n < len(attrs) {
		var extra []string
		for k := range attrs {
			if !slices.Contains(groups.KnownAttrs, k) {
				extra = append(extra, k)
			}
		}
		slices.Sort(extra)
		for _, k := range extra {
			add(k, attrs[k])
		}
	}
	return append(b, '}')
}

func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// Votes implements Store.
func (s *File) Votes(_ context.Context, poll string, fn func(Vote)) error {
	s.mu.RLock()
	vs := s.votes[poll].all()
	s.mu.RUnlock()
	for _, v := range latestVotes(vs) {
		fn(v)
	}
	return nil
}

// DeleteVotes implements Store.
func (s *File) DeleteVotes(ctx context.Context, poll string) error {
	if err := s.write(ctx, encodeRecord(record{Op: "dropvotes", ID: poll})); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.votes, poll)
	s.mu.Unlock()
	return nil
}

// Close syncs what was accepted and closes the log.
func (s *File) Close() error {
	s.wmu.Lock()
	if s.closed {
		s.wmu.Unlock()
		return nil
	}
	s.closed = true
	s.wmu.Unlock()
	if s.path == "" {
		return nil
	}
	close(s.done)
	<-s.stopped
	return s.f.Close()
}
