package record_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/backchannel/backchannel/internal/cmaf/cmaftest"
	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/record"
)

func newRecorder(t *testing.T, dir string, reg *media.Registry) *record.Recorder {
	t.Helper()
	r, err := record.New(record.Config{Dir: dir, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func serve(t *testing.T, r *record.Recorder) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/hls/recordings/", r.Handler())
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

func waitState(t *testing.T, r *record.Recorder, id, state string) record.Recording {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		rec, ok := r.Get(id)
		if ok && rec.State == state {
			return rec
		}
		if time.Now().After(deadline) {
			t.Fatalf("recording %s: %+v, want state %s", id, rec, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRecordingSurvivesBroadcasterAndRestart: a recording keeps going to
// the end of the broadcast, completes when the publisher is gone, replays
// as VOD HLS that ffprobe and ffmpeg accept, and is still listed and
// served by a new recorder on the same directory.
func TestRecordingSurvivesBroadcasterAndRestart(t *testing.T) {
	dir := t.TempDir()
	reg := media.NewRegistry("test")
	defer reg.Close()
	reg.SetOfflineGrace(200 * time.Millisecond)
	r := newRecorder(t, dir, reg)

	src := cmaftest.DemoClip(t, 1)
	pub := cmaftest.Publish(t, reg, "show", src)
	rec, err := r.Start("show")
	if err != nil {
		t.Fatal(err)
	}
	if rec.State != record.StateRecording || rec.Playlist != "/hls/recordings/"+rec.ID+"/index.m3u8" {
		t.Fatalf("started %+v", rec)
	}
	if _, err := r.Start("show"); !errors.Is(err, record.ErrAlreadyRecording) {
		t.Errorf("second start: %v", err)
	}
	if err := cmaftest.Feed(context.Background(), pub, src, 6); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	// While recording: an EVENT playlist.
	base := serve(t, r)
	if code, body := get(t, base+rec.Playlist); code != 200 || !strings.Contains(body, "#EXT-X-PLAYLIST-TYPE:EVENT") || strings.Contains(body, "ENDLIST") {
		t.Errorf("playlist while recording: %d\n%s", code, body)
	}
	pub.Close() // the broadcaster leaves; after the grace the stream ends
	done := waitState(t, r, rec.ID, record.StateComplete)
	if done.EndReason != record.EndStreamEnded || done.Segments != 3 || done.DurationMS < 5900 || done.DurationMS > 6100 {
		t.Errorf("completed recording %+v, want 3 segments of 2 s ended with the stream", done)
	}
	if done.Codecs != "avc1.42c01e,opus" || done.Width != 640 || done.Height != 360 {
		t.Errorf("recording describes %q %dx%d", done.Codecs, done.Width, done.Height)
	}
	for _, f := range []string{"init.mp4", "seg-00001.m4s", "seg-00003.m4s", "index.m3u8", "recording.json"} {
		if _, err := os.Stat(filepath.Join(dir, "show", rec.ID, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	code, body := get(t, base+rec.Playlist)
	if code != 200 || !strings.Contains(body, "#EXT-X-PLAYLIST-TYPE:VOD") || !strings.HasSuffix(body, "#EXT-X-ENDLIST\n") {
		t.Fatalf("VOD playlist: %d\n%s", code, body)
	}
	checkVOD(t, base+rec.Playlist, 180)

	// A new process on the same directory.
	r.Close()
	r2 := newRecorder(t, dir, reg)
	list := r2.List()
	if len(list) != 1 || list[0].ID != rec.ID || list[0].State != record.StateComplete || list[0].EndReason != record.EndStreamEnded {
		t.Fatalf("after restart: %+v", list)
	}
	checkVOD(t, serve(t, r2)+rec.Playlist, 180)
}

// checkVOD has ffprobe and ffmpeg read a VOD playlist.
func checkVOD(t *testing.T, url string, frames int) {
	t.Helper()
	p := cmaftest.FFprobe(t, url)
	v, ok := p.Stream("video")
	if !ok || v.CodecName != "h264" || v.Width != 640 || v.Height != 360 || v.FrameRate() != 30 {
		t.Errorf("VOD video: %+v", v)
	}
	if a, ok := p.Stream("audio"); !ok || a.CodecName != "opus" {
		t.Errorf("VOD audio: %+v", a)
	}
	if n := cmaftest.CheckMonotonic(t, p)[v.Index]; n != frames {
		t.Errorf("VOD has %d video frames, want %d", n, frames)
	}
	if msg := cmaftest.Decode(t, url); msg != "" {
		t.Errorf("ffmpeg decode of the VOD: %s", msg)
	}
}

// TestStopAndInterrupted: Stop completes a recording at once; a recording
// a crashed process left "recording" is closed as "interrupted" with what
// reached the disk.
func TestStopAndInterrupted(t *testing.T) {
	dir := t.TempDir()
	reg := media.NewRegistry("test")
	defer reg.Close()
	r := newRecorder(t, dir, reg)
	if _, err := r.Start("nobody"); !errors.Is(err, record.ErrOffline) {
		t.Errorf("start of an offline stream: %v", err)
	}
	if _, err := r.Stop("nobody"); !errors.Is(err, record.ErrNotRecording) {
		t.Errorf("stop without a recording: %v", err)
	}
	vp8 := cmaftest.Publish(t, reg, "vp8", &cmaftest.Source{Codecs: []media.Codec{{MimeType: media.MimeVP8, ClockRate: 90000}}})
	defer vp8.Close()
	if _, err := r.Start("vp8"); !errors.Is(err, record.ErrUnsupported) {
		t.Errorf("start of a VP8 stream: %v", err)
	}
	src := cmaftest.DemoClip(t, 1)
	pub := cmaftest.Publish(t, reg, "cam", src)
	defer pub.Close()
	rec, err := r.Start("cam")
	if err != nil {
		t.Fatal(err)
	}
	half := &cmaftest.Source{Codecs: src.Codecs, Packets: src.Packets[:len(src.Packets)*3/4]}
	if err := cmaftest.Feed(context.Background(), pub, half, 6); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)

	// Snapshot the directory mid-recording: what a crash leaves.
	crashed := t.TempDir()
	copyDir(t, filepath.Join(dir, "cam", rec.ID), filepath.Join(crashed, "cam", rec.ID))

	stopped, err := r.Stop("cam")
	if err != nil || stopped.State != record.StateComplete || stopped.EndReason != record.EndStopped || stopped.Segments != 3 {
		t.Fatalf("stop: %+v %v", stopped, err)
	}
	if _, ok := r.Active("cam"); ok {
		t.Error("still active after Stop")
	}

	r2 := newRecorder(t, crashed, reg)
	got, ok := r2.Get(rec.ID)
	if !ok || got.State != record.StateComplete || got.EndReason != record.EndInterrupted || got.Segments != 2 {
		t.Fatalf("crashed recording after restart: %+v", got)
	}
	base := serve(t, r2)
	code, body := get(t, base+got.Playlist)
	if code != 200 || !strings.HasSuffix(body, "#EXT-X-ENDLIST\n") || strings.Count(body, "#EXTINF") != 2 {
		t.Fatalf("crashed recording playlist: %d\n%s", code, body)
	}
	checkVOD(t, base+got.Playlist, 120)
}

// TestHandlerRefusesOtherPaths: only a known recording's own files are
// served.
func TestHandlerRefusesOtherPaths(t *testing.T) {
	dir := t.TempDir()
	reg := media.NewRegistry("test")
	defer reg.Close()
	os.WriteFile(filepath.Join(dir, "secret"), []byte("x"), 0o644)
	base := serve(t, newRecorder(t, dir, reg))
	for _, path := range []string{
		"/hls/recordings/", "/hls/recordings/x/index.m3u8", "/hls/recordings/20260101T000000Z-abcdefgh/index.m3u8",
		"/hls/recordings/20260101T000000Z-abcdefgh/../../secret", "/hls/recordings/../secret",
		"/hls/recordings/20260101T000000Z-abcdefgh/recording.json",
	} {
		if code, _ := get(t, base+path); code != 404 {
			t.Errorf("%s: %d, want 404", path, code)
		}
	}
	req, _ := http.NewRequest(http.MethodDelete, base+"/hls/recordings/x/index.m3u8", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 405 {
		t.Errorf("DELETE: %d", res.StatusCode)
	}
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(to, 0o755); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
