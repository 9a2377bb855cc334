package record

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/backchannel/backchannel/internal/cmaf"
	"github.com/backchannel/backchannel/internal/media"
)

const (
	metaFile     = "recording.json"
	playlistFile = "index.m3u8"
)

// recording writes one recording: it is the cmaf.Output of its segmenter.
type recording struct {
	r          *Recorder
	dir        string
	seg        *cmaf.Segmenter
	stopReason atomic.Pointer[string]

	mu      sync.Mutex
	info    Recording
	segs    []diskSegment
	inits   map[int]string // init id → file
	cur     []byte         // parts of the segment being filled
	curDur  time.Duration
	curInit int
	failed  bool
}

type diskSegment struct {
	file     string
	init     string // its init segment's file
	duration time.Duration
}

func (rec *recording) snapshot() Recording {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.info
}

// WriteInit implements cmaf.Output.
func (rec *recording) WriteInit(in cmaf.Init) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	name := "init.mp4"
	if in.ID > 1 {
		name = fmt.Sprintf("init-%d.mp4", in.ID)
	}
	if err := writeFile(filepath.Join(rec.dir, name), in.Data); err != nil {
		rec.failLocked(err)
		return
	}
	if rec.inits == nil {
		rec.inits = map[int]string{}
	}
	rec.inits[in.ID] = name
	if rec.info.Codecs == "" {
		rec.info.Codecs, rec.info.Width, rec.info.Height = in.Codecs, in.Width, in.Height
	}
}

// WritePart implements cmaf.Output.
func (rec *recording) WritePart(p cmaf.Part) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.failed {
		return
	}
	if p.SegmentStart {
		rec.cur, rec.curDur = rec.cur[:0], 0
	}
	rec.cur = append(rec.cur, p.Data...)
	rec.curDur += p.Duration
	rec.curInit = p.Init
	if p.SegmentEnd {
		rec.closeSegmentLocked()
	}
}

// closeSegmentLocked writes the segment being filled and the playlist that
// lists it.
func (rec *recording) closeSegmentLocked() {
	if len(rec.cur) == 0 || rec.failed {
		return
	}
	name := fmt.Sprintf("seg-%05d.m4s", len(rec.segs)+1)
	if err := writeFile(filepath.Join(rec.dir, name), rec.cur); err != nil {
		rec.failLocked(err)
		return
	}
	rec.segs = append(rec.segs, diskSegment{file: name, init: rec.inits[rec.curInit], duration: rec.curDur})
	rec.info.Segments = len(rec.segs)
	rec.info.Bytes += int64(len(rec.cur))
	rec.info.DurationMS += rec.curDur.Milliseconds()
	rec.r.metrics.segments.Inc()
	rec.r.metrics.bytes.Add(float64(len(rec.cur)))
	rec.cur, rec.curDur = rec.cur[:0], 0
	if err := rec.writePlaylistLocked(); err != nil {
		rec.failLocked(err)
		return
	}
	if err := rec.writeMetaLocked(); err != nil {
		rec.failLocked(err)
	}
}

// End implements cmaf.Output: the segmenter has flushed its last segment.
func (rec *recording) End(reason error) {
	end := EndError
	switch {
	case rec.stopReason.Load() != nil:
		end = *rec.stopReason.Load()
	case errors.Is(reason, media.ErrStreamEnded):
		end = EndStreamEnded
	case errors.Is(reason, media.ErrCodecChanged):
		end = EndCodec
	}
	rec.mu.Lock()
	rec.closeSegmentLocked() // parts of a segment the stream's end cut short
	rec.mu.Unlock()
	rec.finish(end)
	rec.r.ended(rec)
	rec.r.log.Info("recording ended", "stream", rec.info.Stream, "id", rec.info.ID, "reason", end, "segments", rec.info.Segments)
}

// finish marks the recording complete on disk: VOD playlist with ENDLIST.
func (rec *recording) finish(reason string) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.info.State == StateComplete {
		return
	}
	now := time.Now().UTC()
	rec.info.State, rec.info.EndedAt = StateComplete, &now
	if rec.info.EndReason == "" {
		rec.info.EndReason = reason
	}
	if err := rec.writePlaylistLocked(); err != nil {
		rec.r.log.Error("record: final playlist", "id", rec.info.ID, "err", err)
	}
	if err := rec.writeMetaLocked(); err != nil {
		rec.r.log.Error("record: final metadata", "id", rec.info.ID, "err", err)
	}
}

func (rec *recording) failLocked(err error) {
	if rec.failed {
		return
	}
	rec.failed = true
	rec.info.EndReason = EndError
	rec.r.metrics.errors.Inc()
	rec.r.log.Error("record: write failed; the recording keeps what it has", "id", rec.info.ID, "err", err)
	if rec.seg != nil {
		go rec.seg.Close() // End follows; Close waits for this very goroutine's caller
	}
}

func (rec *recording) writeMeta() error {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.writeMetaLocked()
}

func (rec *recording) writeMetaLocked() error {
	b, err := json.MarshalIndent(rec.info, "", "  ")
	if err != nil {
		return err
	}
	return writeFile(filepath.Join(rec.dir, metaFile), append(b, '\n'))
}

func (rec *recording) writePlaylist() error {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.writePlaylistLocked()
}

// writePlaylistLocked writes the playlist: an EVENT playlist while
// recording (players can watch it grow), VOD with ENDLIST once complete.
func (rec *recording) writePlaylistLocked() error {
	target := 1
	for _, s := range rec.segs {
		target = max(target, int(math.Ceil(s.duration.Seconds()-0.0005)))
	}
	var b bytes.Buffer
	b.WriteString("#EXTM3U\n#EXT-X-VERSION:7\n")
	fmt.Fprintf(&b, "#EXT-X-TARGETDURATION:%d\n#EXT-X-MEDIA-SEQUENCE:0\n", target)
	if rec.info.State == StateComplete {
		b.WriteString("#EXT-X-PLAYLIST-TYPE:VOD\n")
	} else {
		b.WriteString("#EXT-X-PLAYLIST-TYPE:EVENT\n")
	}
	b.WriteString("#EXT-X-INDEPENDENT-SEGMENTS\n")
	init := ""
	for i, s := range rec.segs {
		if s.init != init {
			if i > 0 {
				b.WriteString("#EXT-X-DISCONTINUITY\n")
			}
			fmt.Fprintf(&b, "#EXT-X-MAP:URI=%q\n", s.init)
			init = s.init
		}
		fmt.Fprintf(&b, "#EXTINF:%.5f,\n%s\n", s.duration.Seconds(), s.file)
	}
	if rec.info.State == StateComplete {
		b.WriteString("#EXT-X-ENDLIST\n")
	}
	return writeFile(filepath.Join(rec.dir, playlistFile), b.Bytes())
}

// loadSegments reads the segment list back from the playlist on disk,
// keeping the segments whose files exist.
func (rec *recording) loadSegments() error {
	b, err := os.ReadFile(filepath.Join(rec.dir, playlistFile))
	if err != nil {
		return err
	}
	segs, err := parsePlaylist(b)
	for _, s := range segs {
		if _, statErr := os.Stat(filepath.Join(rec.dir, s.file)); statErr == nil {
			rec.segs = append(rec.segs, s)
		}
	}
	return err
}

// parsePlaylist reads a recording's own playlist: its EXT-X-MAP, EXTINF
// and segment lines. Names other than a recording's files are refused, so
// a tampered playlist cannot point anywhere else on disk.
func parsePlaylist(b []byte) ([]diskSegment, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	var segs []diskSegment
	init := ""
	var dur time.Duration
	pending := false
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "#EXT-X-MAP:URI="):
			u, err := strconv.Unquote(strings.TrimPrefix(line, "#EXT-X-MAP:URI="))
			if err != nil || !validFile(u) {
				return segs, fmt.Errorf("bad EXT-X-MAP %q", line)
			}
			init = u
		case strings.HasPrefix(line, "#EXTINF:"):
			v, _, _ := strings.Cut(strings.TrimPrefix(line, "#EXTINF:"), ",")
			secs, err := strconv.ParseFloat(v, 64)
			if err != nil || !(secs >= 0 && secs <= 24*3600) {
				return segs, fmt.Errorf("bad EXTINF %q", line)
			}
			dur, pending = time.Duration(secs*float64(time.Second)), true
		case line != "" && !strings.HasPrefix(line, "#") && pending:
			if !validFile(line) || !strings.HasPrefix(line, "seg-") {
				return segs, fmt.Errorf("bad segment name %q", line)
			}
			segs = append(segs, diskSegment{file: line, init: init, duration: dur})
			pending = false
		}
	}
	return segs, sc.Err()
}

// writeFile replaces a file atomically, so a reader or a crash never sees
// half of it.
func writeFile(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
