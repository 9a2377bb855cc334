package record

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/backchannel/backchannel/internal/problem"
)

var fileRE = regexp.MustCompile(`^(index\.m3u8|init(-[0-9]{1,6})?\.mp4|seg-[0-9]{5,9}\.m4s)$`)

// validFile accepts only the names a recording writes: requests never
// reach anything else on disk.
func validFile(name string) bool { return fileRE.MatchString(name) }

// Handler serves recordings as VOD HLS: /hls/recordings/{id}/index.m3u8
// and the init segments and segments it names. Mount it at
// /hls/recordings/.
func (r *Recorder) Handler() http.Handler { return http.HandlerFunc(r.serveHTTP) }

func (r *Recorder) serveHTTP(w http.ResponseWriter, req *http.Request) {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Expose-Headers", "Content-Length, Content-Range, Content-Type")
	switch req.Method {
	case http.MethodOptions:
		h.Set("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "Range")
		h.Set("Allow", "GET, HEAD, OPTIONS")
		w.WriteHeader(http.StatusNoContent)
		return
	case http.MethodGet, http.MethodHead:
	default:
		h.Set("Allow", "GET, HEAD, OPTIONS")
		problem.Write(w, http.StatusMethodNotAllowed, "recordings are read with GET")
		return
	}
	rest := strings.TrimPrefix(req.URL.Path, "/hls/recordings/")
	id, file, ok := strings.Cut(rest, "/")
	if !ok || !validID(id) || !validFile(file) {
		problem.Write(w, http.StatusNotFound, "use /hls/recordings/{id}/index.m3u8")
		return
	}
	r.mu.Lock()
	rec := r.all[id]
	r.mu.Unlock()
	if rec == nil {
		problem.Write(w, http.StatusNotFound, fmt.Sprintf("no recording %q", id))
		return
	}
	f, err := os.Open(filepath.Join(rec.dir, file))
	if err != nil {
		problem.Write(w, http.StatusNotFound, "no such file in this recording")
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		problem.Write(w, http.StatusInternalServerError, "cannot read the recording")
		return
	}
	if strings.HasSuffix(file, ".m3u8") {
		h.Set("Content-Type", "application/vnd.apple.mpegurl")
		if rec.snapshot().State == StateRecording {
			h.Set("Cache-Control", "no-cache")
		} else {
			h.Set("Cache-Control", "public, max-age=60")
		}
	} else {
		h.Set("Content-Type", "video/mp4")
		h.Set("Cache-Control", "public, max-age=86400, immutable")
	}
	http.ServeContent(w, req, "", st.ModTime(), f)
}

type metrics struct {
	started  prometheus.Counter
	segments prometheus.Counter
	bytes    prometheus.Counter
	errors   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, r *Recorder) (*metrics, error) {
	m := &metrics{
		started: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backchannel_recordings_started_total", Help: "Recordings started."}),
		segments: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backchannel_recording_segments_total", Help: "Recorded segments written to disk."}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backchannel_recording_bytes_total", Help: "Bytes of recorded segments written to disk."}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backchannel_recording_write_errors_total", Help: "Recordings cut short by a failed write."}),
	}
	active := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "backchannel_recordings_active", Help: "Streams being recorded."},
		func() float64 {
			r.mu.Lock()
			defer r.mu.Unlock()
			return float64(len(r.active))
		})
	for _, c := range []prometheus.Collector{m.started, m.segments, m.bytes, m.errors, active} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("record: registering metrics: %w", err)
		}
	}
	return m, nil
}
