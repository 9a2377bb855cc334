// Package relay pulls live streams into an edge from where they are on
// air: the ingest node a publisher is connected to (the origin), or
// another edge that already relays it (a tree). A pull starts on the first
// demand for a stream the edge does not have (a WHEP viewer, an HLS
// request, an RTSP reader), runs as a WHEP session between servers that
// carries every track the stream has, publishes into the edge's own
// registry as an on-demand source, forwards keyframe requests upstream,
// and ends once nobody watches on the edge for a linger time.
package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/backchannel/backchannel/edge"
	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/whipclient"
)

// Upstream is a node a stream can be pulled from.
type Upstream struct {
	Node string // node id ("" when unknown, e.g. a configured parent)
	URL  string // base URL; the pull POSTs to URL + "/whep/" + stream
}

// Origins tells where streams can be pulled from.
type Origins interface {
	// Find lists the upstreams that have the stream on air, best first;
	// none when no node is known to have it.
	Find(stream string) []Upstream
}

// Parent is Origins for a fixed upstream: a parent edge or an origin set
// by configuration. It is tried for every stream.
type Parent string

// Find implements Origins.
func (p Parent) Find(string) []Upstream { return []Upstream{{URL: string(p)}} }

// Config configures a Relay.
type Config struct {
	Node     string // this edge's id, sent upstream in edge.RelayHeader
	Registry *media.Registry
	Origins  Origins
	// Linger is how long a pull outlives the last viewer on this edge
	// (default 10 s), so a viewer reloading the page finds it running.
	Linger time.Duration
	// Setting engine of the relay's WebRTC client; default
	// whipclient.DefaultSettingEngine.
	SettingEngine *webrtc.SettingEngine
	HTTPClient    *http.Client
	Logger        *slog.Logger
	Metrics       prometheus.Registerer // nil: a private registry
}

// DefaultLinger is how long a pull outlives its last viewer.
const DefaultLinger = 10 * time.Second

// ErrNotFound: no upstream has the stream.
var ErrNotFound = errors.New("relay: no upstream has the stream on air")

// ErrClosed: the relay is closed.
var ErrClosed = errors.New("relay: closed")

// Relay runs the pulls of one edge.
type Relay struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	cancel  func() // the registry's demand fallback

	mu     sync.Mutex
	pulls  map[string]*pull
	closed bool
	wg     sync.WaitGroup
}

type metrics struct {
	active   prometheus.Gauge
	sessions *prometheus.CounterVec
	packets  *prometheus.CounterVec
}

// New starts relaying for the edge: the registry's demand for any stream
// it has no source of is answered by pulling the stream.
func New(cfg Config) (*Relay, error) {
	switch {
	case cfg.Registry == nil:
		return nil, errors.New("relay: Config.Registry is required")
	case cfg.Origins == nil:
		return nil, errors.New("relay: Config.Origins is required")
	}
	if cfg.Linger <= 0 {
		cfg.Linger = DefaultLinger
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = prometheus.NewRegistry()
	}
	r := &Relay{cfg: cfg, log: cfg.Logger.With("component", "relay", "node", cfg.Node), pulls: map[string]*pull{}}
	r.metrics = &metrics{
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "backchannel_relay_pulls", Help: "Streams this edge is pulling (connecting, live or retrying)."}),
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backchannel_relay_sessions_total", Help: "Upstream WHEP sessions started, by outcome: live, failed."}, []string{"outcome"}),
		packets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backchannel_relay_packets_received_total", Help: "RTP packets received from upstreams."}, []string{"kind"}),
	}
	for _, c := range []prometheus.Collector{r.metrics.active, r.metrics.sessions, r.metrics.packets} {
		if err := cfg.Metrics.Register(c); err != nil {
			return nil, fmt.Errorf("relay: registering metrics: %w", err)
		}
	}
	r.cancel = cfg.Registry.SetDemandFallback(r.demand)
	return r, nil
}

// Pull implements edge.Upstream: it returns once the stream is live in the
// registry, starting a pull if none runs.
func (r *Relay) Pull(ctx context.Context, stream string) error {
	if st, ok := r.cfg.Registry.Current(stream); ok && st.Live() {
		return nil
	}
	p, err := r.start(stream)
	if err != nil {
		return err
	}
	select {
	case <-p.ready:
		return p.readyErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

var _ edge.Upstream = (*Relay)(nil)

// demand is the registry's fallback on-demand source: any stream an
// upstream has.
func (r *Relay) demand(stream string) bool {
	if len(r.cfg.Origins.Find(stream)) == 0 {
		return false
	}
	_, err := r.start(stream)
	return err == nil
}

// Streams lists the streams being pulled.
func (r *Relay) Streams() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.pulls))
	for name := range r.pulls {
		out = append(out, name)
	}
	return out
}

// Upstream returns where the stream is pulled from now, if it is.
func (r *Relay) Upstream(stream string) (Upstream, bool) {
	r.mu.Lock()
	p := r.pulls[stream]
	r.mu.Unlock()
	if p == nil {
		return Upstream{}, false
	}
	return p.current()
}

// OriginOffline ends the pull of a stream that went off air at its origin
// (the cluster's stream view says so): the edge's stream goes offline at
// once, as the origin's did, instead of when the upstream session times
// out. Viewers stay attached for the registry's grace period; OriginLive
// resumes the pull for them if the stream comes back in time.
func (r *Relay) OriginOffline(stream string) {
	r.mu.Lock()
	p := r.pulls[stream]
	r.mu.Unlock()
	if p != nil {
		p.log.Info("origin went off air; ending the pull")
		p.stop()
	}
}

// OriginLive pulls a stream that came on air for viewers still attached
// to it here (in the registry's grace period after it went off air).
func (r *Relay) OriginLive(stream string) {
	st, ok := r.cfg.Registry.Current(stream)
	if !ok || st.Live() || st.Ended() || sinks(st) == 0 {
		return
	}
	_, _ = r.start(stream)
}

// Close ends every pull and stops answering demand.
func (r *Relay) Close() error {
	r.cancel()
	r.mu.Lock()
	r.closed = true
	all := make([]*pull, 0, len(r.pulls))
	for _, p := range r.pulls {
		all = append(all, p)
	}
	r.mu.Unlock()
	for _, p := range all {
		p.stop()
	}
	r.wg.Wait()
	return nil
}

func (r *Relay) start(stream string) (*pull, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, ErrClosed
	}
	if p := r.pulls[stream]; p != nil {
		return p, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &pull{r: r, stream: stream, cancel: cancel, ready: make(chan struct{}),
		log: r.log.With("stream", stream)}
	r.pulls[stream] = p
	r.metrics.active.Inc()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		p.run(ctx)
		r.mu.Lock()
		if r.pulls[stream] == p {
			delete(r.pulls, stream)
		}
		r.mu.Unlock()
		r.metrics.active.Dec()
	}()
	return p, nil
}

func sinks(st *media.Stream) int {
	n := 0
	for _, t := range st.Tracks() {
		n += t.SinkCount()
	}
	return n
}

// pull is one stream's relay: upstream sessions one after the other while
// someone watches here.
type pull struct {
	r      *Relay
	stream string
	log    *slog.Logger
	cancel context.CancelFunc

	ready     chan struct{} // closed once the first session is live, or the pull gave up
	readyErr  error
	readyOnce sync.Once

	mu       sync.Mutex
	upstream Upstream
	live     bool
}

func (p *pull) stop() { p.cancel() }

func (p *pull) current() (Upstream, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.upstream, p.live
}

func (p *pull) markReady(err error) {
	p.readyOnce.Do(func() {
		p.readyErr = err
		close(p.ready)
	})
}

// Backoff between failed sessions of a pull that viewers still wait for.
const (
	minBackoff = 250 * time.Millisecond
	maxBackoff = 5 * time.Second
)

func (p *pull) run(ctx context.Context) {
	defer p.markReady(ErrClosed)
	backoff := minBackoff
	for {
		err := p.session(ctx)
		if ctx.Err() != nil {
			return
		}
		switch {
		case errors.Is(err, errIdle):
			p.log.Info("pull ended: nobody watches here")
			return
		case err != nil:
			p.log.Warn("pull failed", "err", err)
			p.markReady(err)
		}
		// Keep pulling only for viewers still attached (the stream is in
		// its offline grace here): they resume when it comes back.
		st, ok := p.r.cfg.Registry.Current(p.stream)
		if !ok || st.Ended() || sinks(st) == 0 {
			return
		}
		wait := time.Duration(float64(backoff) * (0.8 + 0.4*rand.Float64()))
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// errIdle ends a session nobody watched for the linger time.
var errIdle = errors.New("relay: idle")

// session pulls from the first upstream that has the stream, until the
// upstream goes away, the pull idles or ctx ends.
func (p *pull) session(ctx context.Context) error {
	ups := p.r.cfg.Origins.Find(p.stream)
	if len(ups) == 0 {
		return ErrNotFound
	}
	var errs []error
	for _, up := range ups {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		err := p.sessionFrom(ctx, up)
		if err == nil || errors.Is(err, errIdle) || errors.Is(err, errLost) {
			return err
		}
		p.r.metrics.sessions.WithLabelValues("failed").Inc()
		errs = append(errs, fmt.Errorf("%s: %w", up.URL, err))
	}
	var notFound = true
	for _, e := range errs {
		var he *whipclient.HTTPError
		if !errors.As(e, &he) || he.StatusCode != http.StatusConflict {
			notFound = false
		}
	}
	if notFound {
		return ErrNotFound
	}
	return errors.Join(errs...)
}

// errLost: the upstream session ended after it was live.
var errLost = errors.New("relay: upstream session ended")

// feeder hands packets of the upstream session to the publication. The
// first packets may arrive before the publication exists (the upstream
// starts sending as soon as the connection is up); they wait, in order.
type feeder struct {
	mu      sync.Mutex
	writers map[webrtc.RTPCodecType]*media.TrackWriter
	pending []pendingPacket
	set     bool
	closed  atomic.Bool
}

type pendingPacket struct {
	kind webrtc.RTPCodecType
	pkt  *rtp.Packet
}

// maxPending bounds the packets kept while the publication is made.
const maxPending = 4096

func (f *feeder) write(kind webrtc.RTPCodecType, p *rtp.Packet) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.set {
		if len(f.pending) < maxPending {
			cp := &rtp.Packet{Header: p.Header, Payload: append([]byte(nil), p.Payload...)}
			cp.Header.Extensions = append([]rtp.Extension(nil), p.Header.Extensions...)
			cp.Header.CSRC = append([]uint32(nil), p.Header.CSRC...)
			f.pending = append(f.pending, pendingPacket{kind, cp})
		}
		return nil
	}
	if w := f.writers[kind]; w != nil {
		return w.WriteRTP(p)
	}
	return nil
}

func (f *feeder) start(writers map[webrtc.RTPCodecType]*media.TrackWriter) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writers, f.set = writers, true
	var err error
	for _, pp := range f.pending {
		if w := writers[pp.kind]; w != nil {
			err = errors.Join(err, w.WriteRTP(pp.pkt))
		}
	}
	f.pending = nil
	return err
}

func (f *feeder) writeSenderReport(kind webrtc.RTPCodecType, sr *rtcp.SenderReport) {
	f.mu.Lock()
	w := f.writers[kind]
	f.mu.Unlock()
	if w != nil {
		_ = w.WriteSenderReport(sr)
	}
}

// source is the registry's handle on a relay session.
type source struct {
	player atomic.Pointer[whipclient.Player]
	end    func()
}

func (s *source) RequestKeyframe(kind media.Kind) {
	if pl := s.player.Load(); pl != nil && kind == media.KindVideo {
		pl.RequestKeyframe(webrtc.RTPCodecTypeVideo)
	}
}

// Close: a local publisher took the stream over (or it was ended).
func (s *source) Close() error {
	s.end()
	return nil
}

func (p *pull) sessionFrom(ctx context.Context, up Upstream) error {
	cfg := p.r.cfg
	sctx, endSession := context.WithCancel(ctx)
	defer endSession()
	f := &feeder{}
	src := &source{end: endSession}
	packets := map[webrtc.RTPCodecType]prometheus.Counter{
		webrtc.RTPCodecTypeVideo: p.r.metrics.packets.WithLabelValues("video"),
		webrtc.RTPCodecTypeAudio: p.r.metrics.packets.WithLabelValues("audio"),
	}
	replaced := make(chan struct{}, 1)
	opts := []whipclient.Option{
		whipclient.WithRelayCodecs(),
		whipclient.WithHeader(edge.RelayHeader, cfg.Node),
		whipclient.WithHTTPClient(cfg.HTTPClient),
		whipclient.WithLogger(p.log),
		whipclient.OnRTP(func(t *webrtc.TrackRemote, pkt *rtp.Packet) {
			if c := packets[t.Kind()]; c != nil {
				c.Inc()
			}
			if errors.Is(f.write(t.Kind(), pkt), media.ErrReplaced) {
				select {
				case replaced <- struct{}{}:
				default:
				}
			}
		}),
		whipclient.OnRTCP(func(kind webrtc.RTPCodecType, pkt rtcp.Packet) {
			if sr, ok := pkt.(*rtcp.SenderReport); ok {
				f.writeSenderReport(kind, sr)
			}
		}),
	}
	if cfg.SettingEngine != nil {
		opts = append(opts, whipclient.WithSettingEngine(*cfg.SettingEngine))
	}
	url := strings.TrimRight(up.URL, "/") + "/whep/" + p.stream
	hctx, cancel := context.WithTimeout(sctx, 10*time.Second)
	player, err := whipclient.Play(hctx, url, opts...)
	cancel()
	if err != nil {
		return err
	}
	defer player.Close()
	src.player.Store(player)

	var infos []media.TrackInfo
	if err := json.Unmarshal([]byte(player.AnswerHeader().Get(edge.TracksHeader)), &infos); err != nil || len(infos) == 0 {
		return fmt.Errorf("relay: the upstream did not describe the stream's tracks (%s header): %v", edge.TracksHeader, err)
	}
	codecs := make([]media.Codec, 0, len(infos))
	for _, in := range infos {
		codecs = append(codecs, media.Codec{MimeType: in.Codec, ClockRate: in.ClockRate, Channels: in.Channels, Fmtp: in.Fmtp})
	}
	// A relay never takes a stream from a publisher on this node.
	if st, ok := cfg.Registry.Current(p.stream); ok && st.Live() && st.Info().Protocol != media.ProtocolRelay {
		return fmt.Errorf("relay: stream %s is published here by a %s publisher", p.stream, st.Info().Protocol)
	}
	who := media.PublisherInfo{Protocol: media.ProtocolRelay, Remote: up.Node}
	if who.Remote == "" {
		who.Remote = up.URL
	}
	pub, err := cfg.Registry.Publish(p.stream, who, codecs, src)
	if err != nil {
		return err
	}
	defer pub.Close()
	writers := map[webrtc.RTPCodecType]*media.TrackWriter{}
	for _, kind := range []media.Kind{media.KindVideo, media.KindAudio} {
		if w, ok := pub.Track(kind); ok {
			wk := webrtc.RTPCodecTypeVideo
			if kind == media.KindAudio {
				wk = webrtc.RTPCodecTypeAudio
			}
			writers[wk] = w
		}
	}
	_ = f.start(writers)
	p.mu.Lock()
	p.upstream, p.live = up, true
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.live = false
		p.mu.Unlock()
	}()
	p.r.metrics.sessions.WithLabelValues("live").Inc()
	p.log.Info("relaying", "from", who.Remote, "tracks", len(codecs))
	p.markReady(nil)

	linger := time.NewTicker(min(time.Second, cfg.Linger/4))
	defer linger.Stop()
	var idleSince time.Time
	for {
		select {
		case <-sctx.Done():
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return errLost // taken over by a local publisher, or ended
		case <-replaced:
			return errLost
		case <-player.Done():
			return errLost
		case now := <-linger.C:
			switch n := sinks(pub.Stream()); {
			case n > 0:
				idleSince = time.Time{}
			case idleSince.IsZero():
				idleSince = now
			case now.Sub(idleSince) >= cfg.Linger:
				return errIdle
			}
		}
	}
}
