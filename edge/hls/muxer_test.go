package hls

import (
	"strings"
	"testing"
	"time"

	"github.com/backchannel/backchannel/internal/cmaf"
)

// feedSegment writes one segment of five 200 ms parts of init id.
func feedSegment(m *muxer, init int, start time.Duration) time.Duration {
	for i := range 5 {
		m.WritePart(cmaf.Part{Init: init, Data: []byte{byte(i)}, Start: start, Duration: 200 * time.Millisecond,
			Independent: i == 0, SegmentStart: i == 0, SegmentEnd: i == 4, Wall: time.Unix(0, 0).Add(start)})
		start += 200 * time.Millisecond
	}
	return start
}

// TestPlaylistDiscontinuities: a new init segment puts EXT-X-DISCONTINUITY
// and a new EXT-X-MAP before its first segment; once that segment heads
// the playlist the tag goes and EXT-X-DISCONTINUITY-SEQUENCE counts it.
func TestPlaylistDiscontinuities(t *testing.T) {
	cfg := &Config{PartTarget: 200 * time.Millisecond, SegmentTarget: time.Second, SegmentCount: 3}
	m := newMuxer("s", cfg)
	m.WriteInit(cmaf.Init{ID: 1, Data: []byte("i1")})
	at := time.Duration(0)
	for range 3 {
		at = feedSegment(m, 1, at)
	}
	m.WriteInit(cmaf.Init{ID: 2, Data: []byte("i2")})
	at = feedSegment(m, 2, at) // msn 3

	pl := string(m.playlist)
	if !strings.Contains(pl, "#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init-"+m.token+"-2.mp4\"") || strings.Contains(pl, "DISCONTINUITY-SEQUENCE") {
		t.Fatalf("after the new init:\n%s", pl)
	}
	if !strings.Contains(pl, "#EXT-X-MEDIA-SEQUENCE:1\n") || strings.Count(pl, "#EXTINF:1.00000,") != 3 {
		t.Fatalf("window of 3 segments:\n%s", pl)
	}
	for range 3 {
		at = feedSegment(m, 2, at) // msn 4..6: msn 3 leaves the playlist
	}
	pl = string(m.playlist)
	if strings.Contains(pl, "#EXT-X-DISCONTINUITY\n") || !strings.Contains(pl, "#EXT-X-DISCONTINUITY-SEQUENCE:1\n") {
		t.Fatalf("after the discontinuity left:\n%s", pl)
	}
	for range 5 {
		at = feedSegment(m, 2, at) // and out of the kept ones too
	}
	pl = string(m.playlist)
	if !strings.Contains(pl, "#EXT-X-DISCONTINUITY-SEQUENCE:1\n") || !strings.Contains(pl, "#EXT-X-MEDIA-SEQUENCE:9\n") {
		t.Fatalf("long after:\n%s", pl)
	}
	if len(m.segments) != cfg.SegmentCount+2 {
		t.Errorf("%d segments kept, want %d", len(m.segments), cfg.SegmentCount+2)
	}
	// Blocking conditions on the rendered state.
	st := m.state
	if st.lastMSN != 11 || st.lastPartial || !m.satisfiedLocked(11, -1) || m.satisfiedLocked(12, 0) || !m.satisfiedLocked(11, 7) {
		t.Errorf("state %+v", st)
	}
	m.WritePart(cmaf.Part{Init: 2, Data: []byte{1}, Start: at, Duration: 200 * time.Millisecond, Independent: true, SegmentStart: true})
	if !m.satisfiedLocked(12, 0) || m.satisfiedLocked(12, 1) || m.satisfiedLocked(12, -1) || !m.isNextPartLocked(12, 1) {
		t.Errorf("partial segment: state %+v", m.state)
	}
}
