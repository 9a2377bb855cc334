package rtsp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pion/rtcp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/backchannel/backchannel/internal/media"
)

// PullConfig says which stream to pull from which RTSP URL.
type PullConfig struct {
	Stream string `json:"stream"`
	URL    string `json:"url"`
	// OnDemand pulls only while someone wants the stream (a viewer, an
	// RTSP reader, an HLS muxer) and lets go IdleTimeout after the last
	// one left; otherwise the pull runs always.
	OnDemand bool `json:"on_demand"`
}

// Pull states.
const (
	PullIdle       = "idle"       // on demand, nobody wants it
	PullConnecting = "connecting" // DESCRIBE/SETUP/PLAY under way
	PullLive       = "live"
	PullRetrying   = "retrying" // waiting out the backoff after a failure
)

// PullStatus is a configured pull and how it is doing.
type PullStatus struct {
	PullConfig
	State    string    `json:"state"`
	Error    string    `json:"error,omitempty"` // the last failure
	Since    time.Time `json:"since"`           // of the state
	Restarts int       `json:"restarts"`        // failed sessions so far
}

// Errors of the pull API.
var (
	ErrPullExists = errors.New("rtsp: a pull for this stream exists")
	ErrNoPull     = errors.New("rtsp: no pull for this stream")
)

// PullerConfig configures a Puller.
type PullerConfig struct {
	Registry *media.Registry
	// File keeps the configured pulls across restarts ("" keeps them in
	// memory). It is JSON, {"pulls":[{"stream":…,"url":…,"on_demand":…}]},
	// and may be written by hand while the server is stopped.
	File string
	// IdleTimeout ends an on-demand pull with no sinks; default 10 s.
	IdleTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait before a reconnect; it
	// doubles from the first to the second; defaults 500 ms and 10 s.
	MinBackoff, MaxBackoff time.Duration
	Logger                 *slog.Logger
	Metrics                prometheus.Registerer // nil: a private registry
}

// Puller runs the configured pulls: each is an RTSP client session that
// publishes a remote stream into the registry under its own name.
type Puller struct {
	cfg PullerConfig
	log *slog.Logger
	m   *pullMetrics
	in  *metrics // packet counters shared with the server's naming

	mu     sync.Mutex
	pulls  map[string]*pull
	closed bool
}

type pullMetrics struct {
	restarts prometheus.Counter
	live     prometheus.Gauge
}

// NewPuller loads the configured pulls and starts them.
func NewPuller(cfg PullerConfig) (*Puller, error) {
	if cfg.Registry == nil {
		return nil, errors.New("rtsp: PullerConfig.Registry is required")
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 10 * time.Second
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 500 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(10*time.Second, cfg.MinBackoff)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = prometheus.NewRegistry()
	}
	p := &Puller{cfg: cfg, log: cfg.Logger.With("component", "rtsp-pull"), pulls: map[string]*pull{}}
	p.m = &pullMetrics{
		restarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backchannel_rtsp_pull_restarts_total", Help: "Pull sessions that failed and were retried."}),
		live: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "backchannel_rtsp_pulls_live", Help: "Pulls currently publishing."}),
	}
	for _, c := range []prometheus.Collector{p.m.restarts, p.m.live} {
		if err := cfg.Metrics.Register(c); err != nil {
			return nil, fmt.Errorf("rtsp: registering metrics: %w", err)
		}
	}
	// Packet counters of pulled tracks, under their own names so that a
	// node running both a server and a puller registers each once.
	in := &metrics{
		packetsIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backchannel_rtsp_pull_packets_received_total", Help: "RTP packets received from pulled sources."}, []string{"kind"}),
		bytesIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backchannel_rtsp_pull_bytes_received_total", Help: "RTP bytes received from pulled sources."}, []string{"kind"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backchannel_rtsp_pull_dropped_packets_total", Help: "Pulled packets dropped as malformed."}, []string{"reason"}),
	}
	for _, c := range []prometheus.Collector{in.packetsIn, in.bytesIn, in.dropped} {
		if err := cfg.Metrics.Register(c); err != nil {
			return nil, fmt.Errorf("rtsp: registering metrics: %w", err)
		}
	}
	p.in = in
	cfgs, err := p.load()
	if err != nil {
		return nil, err
	}
	for _, c := range cfgs {
		if err := validatePull(c); err != nil {
			return nil, fmt.Errorf("rtsp: %s: pull %q: %w", cfg.File, c.Stream, err)
		}
		p.start(c)
	}
	return p, nil
}

func validatePull(c PullConfig) error {
	if !media.ValidStreamName(c.Stream) {
		return errors.New(media.StreamNameRule)
	}
	u, err := url.Parse(c.URL)
	if err != nil || !strings.EqualFold(u.Scheme, "rtsp") || u.Host == "" {
		return errors.New("url must be an rtsp:// URL with a host")
	}
	return nil
}

// Add configures and starts a pull.
func (p *Puller) Add(c PullConfig) (PullStatus, error) {
	if err := validatePull(c); err != nil {
		return PullStatus{}, err
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return PullStatus{}, errors.New("rtsp: puller closed")
	}
	if _, ok := p.pulls[c.Stream]; ok {
		p.mu.Unlock()
		return PullStatus{}, ErrPullExists
	}
	p.mu.Unlock()
	pl := p.start(c)
	if err := p.save(); err != nil {
		p.Remove(c.Stream)
		return PullStatus{}, err
	}
	p.log.Info("pull added", "stream", c.Stream, "url", redactURL(c.URL), "on_demand", c.OnDemand)
	return pl.status(), nil
}

// Remove stops a pull and forgets it.
func (p *Puller) Remove(stream string) error {
	p.mu.Lock()
	pl, ok := p.pulls[stream]
	delete(p.pulls, stream)
	p.mu.Unlock()
	if !ok {
		return ErrNoPull
	}
	pl.stop()
	p.log.Info("pull removed", "stream", stream)
	return p.save()
}

// Get returns one pull's status.
func (p *Puller) Get(stream string) (PullStatus, bool) {
	p.mu.Lock()
	pl, ok := p.pulls[stream]
	p.mu.Unlock()
	if !ok {
		return PullStatus{}, false
	}
	return pl.status(), true
}

// List returns every pull's status, by stream name.
func (p *Puller) List() []PullStatus {
	p.mu.Lock()
	out := make([]PullStatus, 0, len(p.pulls))
	for _, pl := range p.pulls {
		out = append(out, pl.status())
	}
	p.mu.Unlock()
	slices.SortFunc(out, func(a, b PullStatus) int { return strings.Compare(a.Stream, b.Stream) })
	return out
}

// Close stops every pull and waits for them.
func (p *Puller) Close() error {
	p.mu.Lock()
	p.closed = true
	all := make([]*pull, 0, len(p.pulls))
	for _, pl := range p.pulls {
		all = append(all, pl)
	}
	p.mu.Unlock()
	for _, pl := range all {
		pl.stop()
	}
	return nil
}

func (p *Puller) start(c PullConfig) *pull {
	ctx, cancel := context.WithCancel(context.Background())
	pl := &pull{p: p, cfg: c, cancel: cancel, done: make(chan struct{}), demand: make(chan struct{}, 1),
		log: p.log.With("stream", c.Stream, "url", redactURL(c.URL))}
	pl.setState(PullIdle, "")
	if c.OnDemand {
		pl.cancelDemand = p.cfg.Registry.OnDemand(c.Stream, pl.wake)
	} else {
		pl.wake()
	}
	p.mu.Lock()
	p.pulls[c.Stream] = pl
	p.mu.Unlock()
	go pl.run(ctx)
	return pl
}

type pullFile struct {
	Pulls []PullConfig `json:"pulls"`
}

func (p *Puller) load() ([]PullConfig, error) {
	if p.cfg.File == "" {
		return nil, nil
	}
	b, err := os.ReadFile(p.cfg.File)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("rtsp: reading pulls: %w", err)
	}
	var f pullFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("rtsp: %s is not a pull file: %w", p.cfg.File, err)
	}
	return f.Pulls, nil
}

func (p *Puller) save() error {
	if p.cfg.File == "" {
		return nil
	}
	var f pullFile
	for _, s := range p.List() {
		f.Pulls = append(f.Pulls, s.PullConfig)
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(p.cfg.File, b)
}

func writeFileAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".pulls-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(b)
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
		os.Remove(tmp)
		return fmt.Errorf("rtsp: writing %s: %w", path, err)
	}
	return nil
}

func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// pull is one configured pull and its goroutine.
type pull struct {
	p            *Puller
	cfg          PullConfig
	log          *slog.Logger
	cancel       context.CancelFunc
	cancelDemand func()
	done         chan struct{}
	demand       chan struct{}

	mu       sync.Mutex
	state    string
	lastErr  string
	since    time.Time
	restarts int
}

func (pl *pull) wake() {
	select {
	case pl.demand <- struct{}{}:
	default:
	}
}

func (pl *pull) stop() {
	if pl.cancelDemand != nil {
		pl.cancelDemand()
	}
	pl.cancel()
	<-pl.done
}

func (pl *pull) setState(state, errText string) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if state != pl.state {
		pl.since = time.Now()
	}
	if state == PullLive && pl.state != PullLive {
		pl.p.m.live.Inc()
	} else if state != PullLive && pl.state == PullLive {
		pl.p.m.live.Dec()
	}
	pl.state = state
	if errText != "" {
		pl.lastErr = errText
	}
}

func (pl *pull) status() PullStatus {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	return PullStatus{PullConfig: PullConfig{Stream: pl.cfg.Stream, URL: redactURL(pl.cfg.URL), OnDemand: pl.cfg.OnDemand},
		State: pl.state, Error: pl.lastErr, Since: pl.since, Restarts: pl.restarts}
}

// errIdle ends an on-demand session nobody watches.
var errIdle = errors.New("rtsp: on-demand pull idle")

func (pl *pull) run(ctx context.Context) {
	defer close(pl.done)
	defer pl.setState(PullIdle, "")
	backoff := pl.p.cfg.MinBackoff
	for {
		select {
		case <-pl.demand:
		case <-ctx.Done():
			return
		}
		started := time.Now()
		err := pl.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errIdle) {
			// Lookups while it was live (a reader's DESCRIBE polls) left
			// a wake-up behind; only new demand may start it again.
			select {
			case <-pl.demand:
			default:
			}
			pl.log.Info("on-demand pull stopped: nobody watches")
			pl.setState(PullIdle, "")
			backoff = pl.p.cfg.MinBackoff
			continue
		}
		pl.mu.Lock()
		pl.restarts++
		pl.mu.Unlock()
		pl.p.m.restarts.Inc()
		if time.Since(started) > 2*pl.p.cfg.MaxBackoff {
			backoff = pl.p.cfg.MinBackoff // it worked for a while: start over
		}
		pl.log.Warn("pull failed; retrying", "err", err, "in", backoff)
		pl.setState(PullRetrying, err.Error())
		// ±20% jitter, so pulls of one camera do not reconnect in step.
		wait := time.Duration(float64(backoff) * (0.8 + 0.4*rand.Float64()))
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return
		}
		backoff = min(2*backoff, pl.p.cfg.MaxBackoff)
		pl.wake()
	}
}

// pullSource is the registry's handle on a pull session.
type pullSource struct {
	c      *Client
	inputs []*trackInput
	chans  []int
}

func (s *pullSource) RequestKeyframe(kind media.Kind) {
	for i, in := range s.inputs {
		if in.desc.Kind != kind {
			continue
		}
		if ssrc := in.sourceSSRC(); ssrc != 0 {
			if b, err := rtcp.Marshal([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: ssrc}}); err == nil {
				_ = s.c.WriteFrame(byte(s.chans[i]+1), b)
			}
		}
	}
}

func (s *pullSource) Close() error { return s.c.nc.Close() }

// pullHandshakeTimeout bounds DESCRIBE, SETUP and PLAY together.
const pullHandshakeTimeout = 10 * time.Second

// pullReadTimeout is how long a pulled source may stay silent.
const pullReadTimeout = 10 * time.Second

// session runs one client session until it fails, goes idle (on demand)
// or ctx ends.
func (pl *pull) session(ctx context.Context) error {
	pl.setState(PullConnecting, "")
	hctx, cancel := context.WithTimeout(ctx, pullHandshakeTimeout)
	defer cancel()
	c, err := Dial(hctx, pl.cfg.URL)
	if err != nil {
		return err
	}
	defer c.Close()
	// ctx ending (the pull removed) must interrupt a blocked read.
	stop := context.AfterFunc(ctx, func() { c.nc.Close() })
	defer stop()

	medias, err := c.Describe(hctx)
	if err != nil {
		return err
	}
	var all []*trackInput
	for _, m := range medias {
		all = append(all, newTrackInput(m, pl.p.in))
	}
	inputs := chooseInputs(all)
	if len(inputs) == 0 {
		var why []string
		for _, m := range medias {
			why = append(why, m.Unsupported)
		}
		return fmt.Errorf("rtsp: the source has no supported track (%s)", strings.Join(why, ", "))
	}
	src := &pullSource{c: c, inputs: inputs}
	handlers := map[byte]func([]byte) error{}
	for i, in := range inputs {
		ch := 2 * i
		if err := c.SetupTCP(hctx, in.desc, ch); err != nil {
			return err
		}
		src.chans = append(src.chans, ch)
		handlers[byte(ch)] = in.writeRTP
		handlers[byte(ch+1)] = in.writeRTCP
	}
	if err := c.Play(hctx); err != nil {
		return err
	}
	cancel()

	var codecs []media.Codec
	for _, in := range inputs {
		codecs = append(codecs, in.registryCodec())
	}
	// A pull never takes a stream from a live publisher (and would flap
	// with it forever if it did).
	if st, ok := pl.p.cfg.Registry.Lookup(pl.cfg.Stream); ok && st.Live() && st.Info().Protocol != media.ProtocolRTSPPull {
		return fmt.Errorf("rtsp: stream %s is published by a %s publisher", pl.cfg.Stream, st.Info().Protocol)
	}
	u, _ := url.Parse(pl.cfg.URL)
	pub, err := pl.p.cfg.Registry.Publish(pl.cfg.Stream, media.PublisherInfo{Protocol: media.ProtocolRTSPPull, Remote: u.Host}, codecs, src)
	if err != nil {
		return err
	}
	defer pub.Close()
	for _, in := range inputs {
		w, _ := pub.Track(in.desc.Kind)
		in.attach(w)
	}
	pl.setState(PullLive, "")
	pl.log.Info("pull live", "tracks", len(inputs))

	// Keepalives, and the on-demand idle check, beside the reading loop.
	var idleErr error
	var wg sync.WaitGroup
	sessCtx, endSession := context.WithCancel(ctx)
	defer func() {
		endSession()
		wg.Wait()
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		keep := time.NewTicker(c.KeepaliveInterval())
		defer keep.Stop()
		check := time.NewTicker(time.Second)
		defer check.Stop()
		var idleSince time.Time
		for {
			select {
			case <-sessCtx.Done():
				return
			case <-keep.C:
				if err := c.Keepalive(); err != nil {
					c.nc.Close()
					return
				}
			case now := <-check.C:
				if !pl.cfg.OnDemand {
					continue
				}
				sinks := 0
				for _, t := range pub.Stream().Tracks() {
					sinks += t.SinkCount()
				}
				switch {
				case sinks > 0:
					idleSince = time.Time{}
				case idleSince.IsZero():
					idleSince = now
				case now.Sub(idleSince) >= pl.p.cfg.IdleTimeout:
					idleErr = errIdle
					c.nc.Close()
					return
				}
			}
		}
	}()
	err = c.ReadFrames(pullReadTimeout, func(ch byte, payload []byte) {
		h := handlers[ch]
		if h == nil {
			return
		}
		if errors.Is(h(payload), media.ErrReplaced) {
			c.nc.Close() // a publisher took the stream over
		}
	})
	endSession()
	wg.Wait()
	if idleErr != nil {
		return idleErr
	}
	if !pub.Active() {
		return errors.New("rtsp: the stream was taken over by another publisher")
	}
	return err
}
