// Package hls is the edge's LL-HLS server (RFC 8216bis with its
// low-latency extensions): one packager per stream, created on the first
// request and fed by the stream's track sinks through internal/cmaf, serves
// a multivariant playlist, a media playlist with parts, preload hints and
// blocking reload, the init segment, segments and parts under
// /hls/{stream}/. A packager nobody asked for during IdleTimeout is closed,
// as mediamtx does; a stream is muxed once per edge whatever the number of
// viewers.
package hls

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/backchannel/backchannel/internal/cmaf"
	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/problem"
)

// Defaults of Config, mediamtx's.
const (
	DefaultPartTarget    = 200 * time.Millisecond
	DefaultSegmentTarget = time.Second
	DefaultSegmentCount  = 7
	DefaultIdleTimeout   = 60 * time.Second
	// DefaultStartTimeout bounds how long a first request waits for the
	// stream's first segment.
	DefaultStartTimeout = 10 * time.Second
)

// Config configures an LL-HLS server.
type Config struct {
	Registry      *media.Registry
	PartTarget    time.Duration // DefaultPartTarget when 0
	SegmentTarget time.Duration // DefaultSegmentTarget when 0; segments are cut at the first keyframe after it
	SegmentCount  int           // segments listed; DefaultSegmentCount when 0
	IdleTimeout   time.Duration // DefaultIdleTimeout when 0
	StartTimeout  time.Duration // DefaultStartTimeout when 0
	// SteeringURI, when set, adds EXT-X-CONTENT-STEERING to multivariant
	// playlists (the stream name replaces "{stream}"); PathwayID names this
	// edge's pathway in it.
	SteeringURI string
	PathwayID   string
	Logger      *slog.Logger
	Metrics     prometheus.Registerer // nil: a private registry
}

// Server serves /hls/.
type Server struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics

	mu     sync.Mutex
	muxers map[string]*muxer
	closed bool
	stop   chan struct{}
	done   chan struct{}
}

// New returns a server; Close stops it.
func New(cfg Config) (*Server, error) {
	if cfg.Registry == nil {
		return nil, errors.New("hls: Config.Registry is required")
	}
	if cfg.PartTarget <= 0 {
		cfg.PartTarget = DefaultPartTarget
	}
	if cfg.SegmentTarget <= 0 {
		cfg.SegmentTarget = DefaultSegmentTarget
	}
	if cfg.SegmentTarget < cfg.PartTarget {
		return nil, fmt.Errorf("hls: segment target %v is shorter than the part target %v", cfg.SegmentTarget, cfg.PartTarget)
	}
	if cfg.SegmentCount <= 0 {
		cfg.SegmentCount = DefaultSegmentCount
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = DefaultStartTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = prometheus.NewRegistry()
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With("component", "hls"), muxers: map[string]*muxer{},
		stop: make(chan struct{}), done: make(chan struct{})}
	m, err := newMetrics(cfg.Metrics, s)
	if err != nil {
		return nil, err
	}
	s.metrics = m
	go s.janitor()
	return s, nil
}

// Muxers is the number of streams being packaged.
func (s *Server) Muxers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.muxers)
}

// Close stops every packager and waits for them.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	all := make([]*muxer, 0, len(s.muxers))
	for name, m := range s.muxers {
		all = append(all, m)
		delete(s.muxers, name)
	}
	s.mu.Unlock()
	close(s.stop)
	<-s.done
	for _, m := range all {
		m.seg.Close()
	}
	return nil
}

// janitor closes packagers that nobody asked for within IdleTimeout and
// forgets those whose stream ended.
func (s *Server) janitor() {
	defer close(s.done)
	t := time.NewTicker(min(s.cfg.IdleTimeout/4, time.Second))
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			var gone []*muxer
			s.mu.Lock()
			for name, m := range s.muxers {
				m.mu.Lock()
				ended := m.ended
				m.mu.Unlock()
				if ended || m.idle(now, s.cfg.IdleTimeout) {
					delete(s.muxers, name)
					gone = append(gone, m)
				}
			}
			s.mu.Unlock()
			for _, m := range gone {
				m.seg.Close()
				s.log.Debug("hls: packager closed", "stream", m.name)
			}
		}
	}
}

var errOffline = errors.New("stream is not on air")

// muxerFor returns the stream's packager, starting one if needed, held for
// the caller, who releases it.
func (s *Server) muxerFor(name string) (*muxer, error) {
	var gone *muxer
	defer func() {
		if gone != nil {
			gone.seg.Close() // already ended: returns at once
		}
	}()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("hls: server closed")
	}
	if m := s.muxers[name]; m != nil {
		m.mu.Lock()
		ended := m.ended
		m.mu.Unlock()
		if !ended {
			m.hold()
			return m, nil
		}
		delete(s.muxers, name)
		gone = m
	}
	st, ok := s.cfg.Registry.Lookup(name)
	if !ok || !st.Live() {
		return nil, errOffline
	}
	m := newMuxer(name, &s.cfg)
	seg, err := cmaf.Start(st, cmaf.Config{PartTarget: s.cfg.PartTarget, SegmentTarget: s.cfg.SegmentTarget, Logger: s.log}, m)
	if err != nil {
		return nil, err
	}
	m.seg = seg
	m.hold()
	s.muxers[name] = m
	s.metrics.started.Inc()
	return m, nil
}

// Handler serves the /hls/ prefix.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

// SetCORS lets players on other origins read the playlists and media.
func SetCORS(h http.Header) {
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Expose-Headers", "Content-Length, Content-Type, Age, Date")
}

// WriteOptions answers a CORS preflight.
func WriteOptions(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "Range, Content-Type")
	h.Set("Access-Control-Max-Age", "86400")
	h.Set("Allow", "GET, HEAD, OPTIONS")
	w.WriteHeader(http.StatusNoContent)
}

// Content types.
const (
	ContentTypePlaylist = "application/vnd.apple.mpegurl"
	ContentTypeMP4      = "video/mp4"
)

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	SetCORS(w.Header())
	switch r.Method {
	case http.MethodOptions:
		WriteOptions(w)
		return
	case http.MethodGet, http.MethodHead:
	default:
		w.Header().Set("Allow", "GET, HEAD, OPTIONS")
		problem.Write(w, http.StatusMethodNotAllowed, "HLS is read with GET")
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/hls/")
	if !ok {
		rest = strings.TrimPrefix(r.URL.Path, "/")
	}
	stream, file, ok := strings.Cut(rest, "/")
	if !ok || stream == "" || file == "" || strings.Contains(file, "/") {
		s.notFound(w, "use /hls/{stream}/index.m3u8")
		return
	}
	if !media.ValidStreamName(stream) {
		problem.Write(w, http.StatusBadRequest, media.StreamNameRule)
		return
	}
	switch {
	case file == "index.m3u8":
		s.serveMultivariant(w, r, stream)
	case file == "media.m3u8":
		s.serveMedia(w, r, stream)
	case strings.HasSuffix(file, ".mp4"):
		s.serveFile(w, r, stream, strings.TrimSuffix(file, ".mp4"))
	default:
		s.notFound(w, "no such HLS resource")
	}
}

func (s *Server) notFound(w http.ResponseWriter, detail string) {
	w.Header().Set("Cache-Control", "no-store")
	problem.Write(w, http.StatusNotFound, detail)
}

// openMuxer answers the request's error itself when there is no packager;
// the caller releases the packager it gets.
func (s *Server) openMuxer(w http.ResponseWriter, stream string) *muxer {
	m, err := s.muxerFor(stream)
	switch {
	case errors.Is(err, errOffline):
		s.metrics.rejections.WithLabelValues("offline").Inc()
		w.Header().Set("Cache-Control", "no-store")
		problem.WriteRetry(w, http.StatusNotFound, 5*time.Second, fmt.Sprintf("stream %q is not on air", stream))
		return nil
	case errors.Is(err, cmaf.ErrNoSupportedTrack):
		s.metrics.rejections.WithLabelValues("codec").Inc()
		problem.Write(w, http.StatusUnsupportedMediaType, fmt.Sprintf("stream %q cannot be packaged as HLS: %v", stream, err))
		return nil
	case err != nil:
		w.Header().Set("Cache-Control", "no-store")
		problem.WriteRetry(w, http.StatusServiceUnavailable, 5*time.Second, err.Error())
		return nil
	}
	return m
}

// waitFor blocks until cond (checked under the muxer's lock) holds, the
// packager ends, the request goes away, or timeout passes.
func (m *muxer) waitFor(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		m.mu.Lock()
		if cond() {
			return true // locked: the caller unlocks
		}
		ch, ended := m.changed, m.ended
		m.mu.Unlock()
		if ended {
			return false
		}
		select {
		case <-ch:
		case <-timer.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

func (s *Server) serveMultivariant(w http.ResponseWriter, r *http.Request, stream string) {
	m := s.openMuxer(w, stream)
	if m == nil {
		return
	}
	defer m.release()
	if !m.waitFor(r.Context(), s.cfg.StartTimeout, func() bool { return m.state.ready }) {
		s.notReady(w, m, stream)
		return
	}
	last := m.segments[len(m.segments)-1]
	in := m.inits[last.init]
	bw := m.bitrate
	m.mu.Unlock()

	var b strings.Builder
	b.WriteString("#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-INDEPENDENT-SEGMENTS\n")
	if s.cfg.SteeringURI != "" {
		fmt.Fprintf(&b, "#EXT-X-CONTENT-STEERING:SERVER-URI=%q", strings.ReplaceAll(s.cfg.SteeringURI, "{stream}", stream))
		if s.cfg.PathwayID != "" {
			fmt.Fprintf(&b, ",PATHWAY-ID=%q", s.cfg.PathwayID)
		}
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "#EXT-X-STREAM-INF:BANDWIDTH=%s,CODECS=%q", formatBandwidth(bw), in.Codecs)
	if in.Width > 0 && in.Height > 0 {
		fmt.Fprintf(&b, ",RESOLUTION=%dx%d", in.Width, in.Height)
	}
	if fps := in.FrameRate; fps > 0 {
		fmt.Fprintf(&b, ",FRAME-RATE=%.3f", fps)
	} else if fps := measuredFPS(s.cfg.Registry, stream); fps > 0 {
		fmt.Fprintf(&b, ",FRAME-RATE=%.3f", fps)
	}
	if s.cfg.PathwayID != "" && s.cfg.SteeringURI != "" {
		fmt.Fprintf(&b, ",PATHWAY-ID=%q", s.cfg.PathwayID)
	}
	b.WriteString("\nmedia.m3u8\n")
	h := w.Header()
	h.Set("Content-Type", ContentTypePlaylist)
	h.Set("Cache-Control", "no-cache")
	_, _ = w.Write([]byte(b.String()))
}

func measuredFPS(reg *media.Registry, stream string) float64 {
	st, ok := reg.Lookup(stream)
	if !ok {
		return 0
	}
	for _, t := range st.Info().Tracks {
		if t.Kind == string(media.KindVideo) && t.FPS > 0 {
			return float64(int(t.FPS + 0.5))
		}
	}
	return 0
}

func (s *Server) notReady(w http.ResponseWriter, m *muxer, stream string) {
	m.mu.Lock()
	ended := m.ended
	m.mu.Unlock()
	w.Header().Set("Cache-Control", "no-store")
	if ended {
		problem.WriteRetry(w, http.StatusNotFound, 5*time.Second, fmt.Sprintf("stream %q ended", stream))
		return
	}
	s.metrics.rejections.WithLabelValues("timeout").Inc()
	problem.WriteRetry(w, http.StatusServiceUnavailable, 2*time.Second, fmt.Sprintf("stream %q has no media to package yet", stream))
}

// serveMedia serves the media playlist, holding blocking reloads
// (_HLS_msn, _HLS_part) until the playlist holds what they ask for.
func (s *Server) serveMedia(w http.ResponseWriter, r *http.Request, stream string) {
	msn, part, err := parseBlocking(r.URL.Query())
	if err != nil {
		problem.Write(w, http.StatusBadRequest, err.Error())
		return
	}
	m := s.openMuxer(w, stream)
	if m == nil {
		return
	}
	defer m.release()
	timeout := s.cfg.StartTimeout
	var cond func() bool
	if msn < 0 {
		cond = func() bool { return m.state.ready }
	} else {
		m.mu.Lock()
		st, target := m.state, m.targetDurationLocked()
		m.mu.Unlock()
		// Past the segment after next: the client is confused (RFC 8216bis
		// 6.2.5.2), unless nothing is listed yet.
		if st.ready && uint64(msn) > st.lastMSN+2 {
			s.metrics.rejections.WithLabelValues("msn_ahead").Inc()
			w.Header().Set("Cache-Control", "no-store")
			problem.Write(w, http.StatusBadRequest, fmt.Sprintf("_HLS_msn=%d is more than two segments past the playlist's last (%d)", msn, st.lastMSN))
			return
		}
		if st.ready {
			timeout = 3 * time.Duration(target) * time.Second
		}
		s.metrics.blocking.Inc()
		cond = func() bool { return m.satisfiedLocked(uint64(msn), part) }
	}
	if !m.waitFor(r.Context(), timeout, cond) {
		if r.Context().Err() != nil {
			return
		}
		s.notReady(w, m, stream)
		return
	}
	body := m.playlist
	m.mu.Unlock()
	h := w.Header()
	h.Set("Content-Type", ContentTypePlaylist)
	if msn >= 0 {
		// The answer to a blocking request holds for everyone asking the same.
		h.Set("Cache-Control", fmt.Sprintf("public, max-age=%d", max(1, int(6*s.cfg.PartTarget.Seconds()+0.5))))
	} else {
		h.Set("Cache-Control", "no-cache")
	}
	s.metrics.playlists.Inc()
	_, _ = w.Write(body)
}

// parseBlocking reads the blocking reload parameters: msn is -1 without
// _HLS_msn, part -1 without _HLS_part.
func parseBlocking(q url.Values) (msn int64, part int, err error) {
	msn, part = -1, -1
	if v := q.Get("_HLS_msn"); v != "" {
		n, err := strconv.ParseUint(v, 10, 63)
		if err != nil {
			return -1, -1, errors.New("_HLS_msn must be a media sequence number")
		}
		msn = int64(n)
	}
	if v := q.Get("_HLS_part"); v != "" {
		n, err := strconv.ParseUint(v, 10, 31)
		if err != nil {
			return -1, -1, errors.New("_HLS_part must be a part index")
		}
		if msn < 0 {
			return -1, -1, errors.New("_HLS_part needs _HLS_msn")
		}
		part = int(n)
	}
	return msn, part, nil
}

// parseMediaName splits init-{token}-{id}, seg-{token}-{msn} and
// part-{token}-{msn}-{i} (without ".mp4").
func parseMediaName(name string) (kind, token string, nums []uint64, ok bool) {
	fields := strings.Split(name, "-")
	want := map[string]int{"init": 1, "seg": 1, "part": 2}[fields[0]]
	if want == 0 || len(fields) != 2+want || fields[1] == "" {
		return "", "", nil, false
	}
	for _, f := range fields[2:] {
		n, err := strconv.ParseUint(f, 10, 63)
		if err != nil {
			return "", "", nil, false
		}
		nums = append(nums, n)
	}
	return fields[0], fields[1], nums, true
}

// serveFile serves init-{token}-{id}, seg-{token}-{msn}, part-{token}-{msn}-{i}.
func (s *Server) serveFile(w http.ResponseWriter, r *http.Request, stream, name string) {
	kind, token, nums, ok := parseMediaName(name)
	if !ok || nums[0] > math.MaxInt32 && kind != "seg" {
		s.notFound(w, "no such HLS resource")
		return
	}
	s.mu.Lock()
	m := s.muxers[stream]
	if m != nil && m.token == token {
		m.hold()
	} else {
		m = nil
	}
	s.mu.Unlock()
	if m == nil {
		s.notFound(w, "this HLS resource is gone: reload the playlist")
		return
	}
	defer m.release()
	var data []byte
	switch kind {
	case "init":
		m.mu.Lock()
		in, ok := m.inits[int(nums[0])]
		m.mu.Unlock()
		if !ok {
			s.notFound(w, "no such init segment")
			return
		}
		data = in.Data
	case "seg":
		m.mu.Lock()
		if sg := m.findLocked(nums[0]); sg != nil && sg.complete {
			data = sg.data
		}
		m.mu.Unlock()
	case "part":
		if nums[1] > math.MaxInt32 {
			break
		}
		msn, idx := nums[0], int(nums[1])
		get := func() bool {
			if sg := m.findLocked(msn); sg != nil && idx < len(sg.parts) {
				data = sg.parts[idx].data
				return true
			}
			return false
		}
		m.mu.Lock()
		found := get()
		next := m.isNextPartLocked(msn, idx)
		m.mu.Unlock()
		if !found && next {
			// The preload hint: answer as soon as the part exists.
			if m.waitFor(r.Context(), 3*s.cfg.PartTarget+time.Second, get) {
				m.mu.Unlock()
			}
		}
	}
	if data == nil {
		s.notFound(w, "no such segment or part (yet)")
		return
	}
	h := w.Header()
	h.Set("Content-Type", ContentTypeMP4)
	h.Set("Content-Length", strconv.Itoa(len(data)))
	// Media URIs are never reused (the packager's token is in them).
	h.Set("Cache-Control", "public, max-age=3600, immutable")
	s.metrics.bytes.WithLabelValues(kind).Add(float64(len(data)))
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(data)
}
