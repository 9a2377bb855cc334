// Package record is Backchannel's recording service, the data persistence
// of broadcasts: a stream being recorded is cut into fMP4 segments on disk
// by internal/cmaf (the same pipeline as LL-HLS), under
// <Dir>/<stream>/<id>/ (init.mp4, seg-00001.m4s…, index.m3u8 rewritten as
// each segment closes, recording.json), and replays as VOD HLS at
// /hls/recordings/{id}/index.m3u8, after the broadcaster has left and
// across restarts: the directory is the index.
package record

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/backchannel/backchannel/internal/cmaf"
	"github.com/backchannel/backchannel/internal/media"
)

// DefaultSegmentTarget is the length of recorded segments (cut at the first
// keyframe after it).
const DefaultSegmentTarget = 2 * time.Second

// Recording states.
const (
	StateRecording = "recording"
	StateComplete  = "complete"
)

// Why a recording ended.
const (
	EndStopped     = "stopped"      // Stop
	EndStreamEnded = "stream_ended" // the broadcast ended (publisher gone past its grace)
	EndCodec       = "codec_changed"
	EndShutdown    = "shutdown"    // the server closed
	EndInterrupted = "interrupted" // the process died; found at start-up
	EndError       = "error"       // a write failed
)

// Errors of Start and Stop.
var (
	ErrOffline          = errors.New("record: stream is not on air")
	ErrAlreadyRecording = errors.New("record: stream is already being recorded")
	ErrNotRecording     = errors.New("record: stream is not being recorded")
	ErrClosed           = errors.New("record: recorder closed")
	ErrUnsupported      = errors.New("record: the stream has no track that can be recorded (H.264, H.265, Opus, AAC)")
)

// Recording describes one recording, as listed by the API.
type Recording struct {
	ID         string     `json:"id"`
	Stream     string     `json:"stream"`
	State      string     `json:"state"` // recording | complete
	StartedAt  time.Time  `json:"started_at"`
	EndedAt    *time.Time `json:"ended_at,omitempty"`
	EndReason  string     `json:"end_reason,omitempty"`
	DurationMS int64      `json:"duration_ms"`
	Segments   int        `json:"segments"`
	Bytes      int64      `json:"bytes"`
	Codecs     string     `json:"codecs,omitempty"`
	Width      int        `json:"width,omitempty"`
	Height     int        `json:"height,omitempty"`
	// Playlist is the VOD playlist's path on any node serving /hls/recordings/.
	Playlist string `json:"playlist"`
}

// Config configures a Recorder.
type Config struct {
	Dir           string // root of the recordings, e.g. <data-dir>/recordings
	Registry      *media.Registry
	SegmentTarget time.Duration // DefaultSegmentTarget when 0
	Logger        *slog.Logger
	Metrics       prometheus.Registerer // nil: a private registry
}

// Recorder starts and stops recordings and serves them.
type Recorder struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics

	mu     sync.Mutex
	all    map[string]*recording // by id
	active map[string]*recording // by stream
	closed bool
}

// New opens the recordings under cfg.Dir (creating it), closing any that a
// previous process left unfinished.
func New(cfg Config) (*Recorder, error) {
	if cfg.Dir == "" {
		return nil, errors.New("record: Config.Dir is required")
	}
	if cfg.Registry == nil {
		return nil, errors.New("record: Config.Registry is required")
	}
	if cfg.SegmentTarget <= 0 {
		cfg.SegmentTarget = DefaultSegmentTarget
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = prometheus.NewRegistry()
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("record: %w", err)
	}
	r := &Recorder{cfg: cfg, log: cfg.Logger.With("component", "record"), all: map[string]*recording{}, active: map[string]*recording{}}
	m, err := newMetrics(cfg.Metrics, r)
	if err != nil {
		return nil, err
	}
	r.metrics = m
	if err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

// load reads every recording.json under Dir.
func (r *Recorder) load() error {
	metas, err := filepath.Glob(filepath.Join(r.cfg.Dir, "*", "*", metaFile))
	if err != nil {
		return err
	}
	for _, path := range metas {
		b, err := os.ReadFile(path)
		if err != nil {
			r.log.Warn("record: unreadable recording", "path", path, "err", err)
			continue
		}
		var info Recording
		if err := json.Unmarshal(b, &info); err != nil || !validID(info.ID) {
			r.log.Warn("record: bad recording.json", "path", path, "err", err)
			continue
		}
		rec := &recording{r: r, dir: filepath.Dir(path), info: info}
		if err := rec.loadSegments(); err != nil {
			r.log.Warn("record: recording without a usable playlist", "path", path, "err", err)
		}
		if info.State == StateRecording {
			// The process stopped while recording: what reached the disk
			// (every closed segment) is the recording.
			rec.finish(EndInterrupted)
		}
		r.all[info.ID] = rec
	}
	return nil
}

// Start records the named stream from its next keyframe on.
func (r *Recorder) Start(stream string) (Recording, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return Recording{}, ErrClosed
	}
	if r.active[stream] != nil {
		return Recording{}, ErrAlreadyRecording
	}
	st, ok := r.cfg.Registry.Lookup(stream)
	if !ok || !st.Live() {
		return Recording{}, ErrOffline
	}
	id, err := newID()
	if err != nil {
		return Recording{}, err
	}
	dir := filepath.Join(r.cfg.Dir, stream, id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Recording{}, fmt.Errorf("record: %w", err)
	}
	rec := &recording{r: r, dir: dir, info: Recording{
		ID: id, Stream: stream, State: StateRecording, StartedAt: time.Now().UTC(),
		Playlist: "/hls/recordings/" + id + "/index.m3u8",
	}}
	if err := rec.writeMeta(); err != nil {
		os.RemoveAll(dir)
		return Recording{}, err
	}
	if err := rec.writePlaylist(); err != nil {
		os.RemoveAll(dir)
		return Recording{}, err
	}
	seg, err := cmaf.Start(st, cmaf.Config{SegmentTarget: r.cfg.SegmentTarget, NoParts: true, Logger: r.log}, rec)
	if err != nil {
		os.RemoveAll(dir)
		switch {
		case errors.Is(err, media.ErrStreamEnded):
			return Recording{}, ErrOffline
		case errors.Is(err, cmaf.ErrNoSupportedTrack):
			return Recording{}, fmt.Errorf("%w: %v", ErrUnsupported, err)
		}
		return Recording{}, err
	}
	rec.seg = seg
	r.all[id] = rec
	r.active[stream] = rec
	r.metrics.started.Inc()
	r.log.Info("recording started", "stream", stream, "id", id, "dir", dir)
	return rec.snapshot(), nil
}

// Stop ends the stream's recording and returns it, complete.
func (r *Recorder) Stop(stream string) (Recording, error) {
	r.mu.Lock()
	rec := r.active[stream]
	r.mu.Unlock()
	if rec == nil {
		return Recording{}, ErrNotRecording
	}
	rec.stopReason.CompareAndSwap(nil, ptr(EndStopped))
	rec.seg.Close()
	return rec.snapshot(), nil
}

func ptr[T any](v T) *T { return &v }

// Active returns the stream's ongoing recording, if any.
func (r *Recorder) Active(stream string) (Recording, bool) {
	r.mu.Lock()
	rec := r.active[stream]
	r.mu.Unlock()
	if rec == nil {
		return Recording{}, false
	}
	return rec.snapshot(), true
}

// Get returns a recording by id.
func (r *Recorder) Get(id string) (Recording, bool) {
	r.mu.Lock()
	rec := r.all[id]
	r.mu.Unlock()
	if rec == nil {
		return Recording{}, false
	}
	return rec.snapshot(), true
}

// List returns every recording, newest first.
func (r *Recorder) List() []Recording {
	r.mu.Lock()
	out := make([]Recording, 0, len(r.all))
	for _, rec := range r.all {
		out = append(out, rec.snapshot())
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b Recording) int {
		if c := b.StartedAt.Compare(a.StartedAt); c != 0 {
			return c
		}
		return strings.Compare(b.ID, a.ID)
	})
	return out
}

// Close ends every ongoing recording (reason "shutdown") and waits for
// their last writes.
func (r *Recorder) Close() error {
	r.mu.Lock()
	r.closed = true
	active := make([]*recording, 0, len(r.active))
	for _, rec := range r.active {
		active = append(active, rec)
	}
	r.mu.Unlock()
	for _, rec := range active {
		rec.stopReason.CompareAndSwap(nil, ptr(EndShutdown))
		rec.seg.Close()
	}
	return nil
}

// ended is called by a recording once its last write is done.
func (r *Recorder) ended(rec *recording) {
	r.mu.Lock()
	if r.active[rec.info.Stream] == rec {
		delete(r.active, rec.info.Stream)
	}
	r.mu.Unlock()
}

func newID() (string, error) {
	var b [5]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return time.Now().UTC().Format("20060102T150405Z") + "-" + strings.ToLower(base32.StdEncoding.EncodeToString(b[:])), nil
}

// validID accepts only ids newID makes: they name directories.
func validID(id string) bool {
	if len(id) != 16+1+8 {
		return false
	}
	for i, c := range id {
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'z', c == 'T' && i == 8, c == 'Z' && i == 15, c == '-' && i == 16:
		default:
			return false
		}
	}
	return true
}
