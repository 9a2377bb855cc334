package keys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// FileStore keeps records in one JSON file, for the embedded deployment.
// Every change rewrites the file atomically (temporary file, fsync, rename,
// directory fsync), so a crash leaves the old or the new content, never a
// mix. Reads are served from memory.
type FileStore struct {
	path string

	mu      sync.Mutex
	records map[string]map[string]Record // stream → id → record
	closed  bool
}

type fileContent struct {
	Keys []Record `json:"keys"`
}

// FileName is the store's file name under the data directory.
const FileName = "stream-keys.json"

// OpenFile opens (or creates on first write) the store at path.
func OpenFile(path string) (*FileStore, error) {
	s := &FileStore{path: path, records: map[string]map[string]Record{}}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return s, nil
	case err != nil:
		return nil, fmt.Errorf("keys: reading %s: %w", path, err)
	}
	var c fileContent
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("keys: %s is not a key file: %w", path, err)
	}
	for _, r := range c.Keys {
		if r.ID == "" || r.Stream == "" || r.Hash == "" {
			return nil, fmt.Errorf("keys: %s holds an incomplete record", path)
		}
		s.put(r)
	}
	return s, nil
}

func (s *FileStore) put(r Record) {
	m := s.records[r.Stream]
	if m == nil {
		m = map[string]Record{}
		s.records[r.Stream] = m
	}
	m[r.ID] = r
}

// Add stores a new record.
func (s *FileStore) Add(_ context.Context, r Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	if _, dup := s.records[r.Stream][r.ID]; dup {
		return fmt.Errorf("keys: duplicate id %s", r.ID)
	}
	s.put(r)
	if err := s.saveLocked(); err != nil {
		delete(s.records[r.Stream], r.ID)
		return err
	}
	return nil
}

// List returns the records of a stream, oldest first.
func (s *FileStore) List(_ context.Context, stream string) ([]Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errClosed
	}
	out := make([]Record, 0, len(s.records[stream]))
	for _, r := range s.records[stream] {
		out = append(out, r)
	}
	sortRecords(out)
	return out, nil
}

// Remove deletes a record.
func (s *FileStore) Remove(_ context.Context, stream, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	r, ok := s.records[stream][id]
	if !ok {
		return ErrNotFound
	}
	delete(s.records[stream], id)
	if err := s.saveLocked(); err != nil {
		s.put(r)
		return err
	}
	if len(s.records[stream]) == 0 {
		delete(s.records, stream)
	}
	return nil
}

// Touch sets a record's last use.
func (s *FileStore) Touch(_ context.Context, stream, id string, at time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	r, ok := s.records[stream][id]
	if !ok {
		return ErrNotFound
	}
	prev := r
	r.LastUsedAt = at
	s.records[stream][id] = r
	if err := s.saveLocked(); err != nil {
		s.records[stream][id] = prev
		return err
	}
	return nil
}

// Close makes later calls fail.
func (s *FileStore) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return nil
}

var errClosed = errors.New("keys: store closed")

func (s *FileStore) saveLocked() error {
	var c fileContent
	for _, m := range s.records {
		for _, r := range m {
			c.Keys = append(c.Keys, r)
		}
	}
	sortRecords(c.Keys)
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(s.path, b)
}

func writeFileAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	f, err := os.CreateTemp(dir, ".stream-keys-*")
	if err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Chmod(0o600)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("keys: writing %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
