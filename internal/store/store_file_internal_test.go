package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"github.com/backchannel/backchannel/groups"
)

// failingLog writes half of the next write and fails it, as a full disk
// or an I/O error can, then behaves.
type failingLog struct {
	logFile
	failNext bool
}

func (f *failingLog) Write(b []byte) (int, error) {
	if f.failNext {
		f.failNext = false
		n, _ := f.logFile.Write(b[:len(b)/2])
		return n, errors.New("injected write failure")
	}
	return f.logFile.Write(b)
}

// A failed write is not acknowledged and leaves nothing in the log: the
// retry appends after the last synced record, votes refer only to dims
// records that reached the disk, and a restart replays exactly what
// succeeded.
func TestFileFailedWriteIsUndone(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenFile(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	br := groups.Attrs{"country": "BR"}
	de := groups.Attrs{"country": "DE"}
	batch := func(from, n int, a groups.Attrs, key string) []Vote {
		var v []Vote
		for i := from; i < from+n; i++ {
			v = append(v, Vote{Poll: "p", User: fmt.Sprintf("u%d", i), Choice: i % 3, Attrs: a, AttrsKey: key})
		}
		return v
	}
	if err := s.SaveVotes(ctx, batch(0, 10, br, "br")); err != nil {
		t.Fatal(err)
	}
	fl := &failingLog{logFile: s.f, failNext: true}
	s.wmu.Lock()
	s.f = fl
	s.wmu.Unlock()
	// This batch carries the first DE dims record and BR votes by id.
	failed := append(batch(10, 10, de, "de"), batch(20, 10, br, "br")...)
	if err := s.SaveVotes(ctx, failed); err == nil {
		t.Fatal("a failed write was reported as saved")
	}
	var n int
	s.Votes(ctx, "p", func(Vote) { n++ })
	if n != 10 {
		t.Fatalf("%d votes in memory after a failed write, want 10", n)
	}
	if err := s.SaveVotes(ctx, failed); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if err := s.SaveVotes(ctx, batch(30, 5, de, "de")); err != nil {
		t.Fatal(err)
	}
	s.Close()

	log, err := os.ReadFile(filepath.Join(dir, logName))
	if err != nil {
		t.Fatal(err)
	}
	for i, line := range strings.Split(strings.TrimSuffix(string(log), "\n"), "\n") {
		if !strings.HasPrefix(line, `{"op":`) || !strings.HasSuffix(line, "}") {
			t.Fatalf("line %d of the log is torn: %q", i, line)
		}
	}
	s, err = OpenFile(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got := map[string]Vote{}
	s.Votes(ctx, "p", func(v Vote) { got[v.User] = v })
	if len(got) != 35 {
		t.Fatalf("%d votes after restart, want 35", len(got))
	}
	for i := range 35 {
		want := "BR"
		if (i >= 10 && i < 20) || i >= 30 {
			want = "DE"
		}
		v := got[fmt.Sprintf("u%d", i)]
		if v.Choice != i%3 || v.Attrs["country"] != want {
			t.Fatalf("u%d: %+v, want choice %d country %s", i, v, i%3, want)
		}
	}
}

// truncFails cannot undo a failed write.
type truncFails struct{ failingLog }

func (f *truncFails) Truncate(int64) error { return errors.New("injected truncate failure") }

// When a failed write cannot be cut away, the store refuses every later
// write rather than append after a torn record.
func TestFileUndoableFailureRefusesWrites(t *testing.T) {
	s, err := OpenFile(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	s.wmu.Lock()
	s.f = &truncFails{failingLog{logFile: s.f, failNext: true}}
	s.wmu.Unlock()
	if err := s.SaveVotes(ctx, []Vote{{Poll: "p", User: "a", Choice: 1}}); err == nil {
		t.Fatal("a failed write was reported as saved")
	}
	if err := s.Put(ctx, "k", "id", []byte(`{}`)); err == nil || !strings.Contains(err.Error(), "cannot be written") {
		t.Fatalf("write after an undoable failure: %v", err)
	}
}

// A wake-up with nothing to write (the committer can be woken twice for
// one batch) must not leave the pending and spare buffers on one array:
// the next flush would hand writers the array it is writing out.
func TestFileIdleFlushKeepsBuffersApart(t *testing.T) {
	s, err := OpenFile(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	for i := range 3 { // both buffers in use
		if err := s.SaveVotes(ctx, []Vote{{Poll: "p", User: fmt.Sprintf("u%d", i)}}); err != nil {
			t.Fatal(err)
		}
	}
	s.flush()
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if cap(s.pending) > 0 && cap(s.spare) > 0 && unsafe.SliceData(s.pending[:1]) == unsafe.SliceData(s.spare[:1]) {
		t.Fatal("pending and spare share an array after an idle flush")
	}
}
