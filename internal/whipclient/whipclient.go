// Package whipclient is a WHIP publisher and WHEP player built on pion: the
// Go side of Backchannel's own WebRTC signalling, used by tests, the demo
// broadcast, the load generator and origin→edge relays.
//
// Both clients make a complete (non-trickle) offer, POST it, apply the
// answer and, on Close, DELETE the session resource, resolving its
// Location against the request URL as RFC 3986 says.
package whipclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/transport/v4"
	"github.com/pion/transport/v4/stdnet"
	"github.com/pion/webrtc/v4"

	"github.com/backchannel/backchannel/internal/rtc"
	"github.com/backchannel/backchannel/internal/udpbuf"
)

// Default codecs: what browsers publish by default and what every viewer
// can decode.
var (
	H264 = webrtc.RTPCodecCapability{
		MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
		SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
	}
	VP8  = webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}
	Opus = webrtc.RTPCodecCapability{
		MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2,
		SDPFmtpLine: "minptime=10;useinbandfec=1",
	}
)

// Option configures Publish or Play.
type Option func(*config)

type config struct {
	httpClient    *http.Client
	settings      *webrtc.SettingEngine
	logger        *slog.Logger
	video, audio  *webrtc.RTPCodecCapability
	noVideo       bool
	noAudio       bool
	bearer        string
	onRTP         func(*webrtc.TrackRemote, *rtp.Packet)
	onRTCP        func(webrtc.RTPCodecType, rtcp.Packet)
	onKeyframeReq func()
	iceServers    []webrtc.ICEServer
	relayCodecs   bool
	header        http.Header
}

// WithHTTPClient sets the HTTP client for signalling (default: a client
// with a 15 s timeout).
func WithHTTPClient(c *http.Client) Option { return func(o *config) { o.httpClient = c } }

// WithSettingEngine replaces the default pion settings (loopback candidates
// included, mDNS off).
func WithSettingEngine(se webrtc.SettingEngine) Option {
	return func(o *config) { o.settings = &se }
}

// WithLogger sets the logger (pion's own logs go there too, one level down).
func WithLogger(l *slog.Logger) Option { return func(o *config) { o.logger = l } }

// WithVideoCodec sets the published video codec (default H264).
func WithVideoCodec(c webrtc.RTPCodecCapability) Option { return func(o *config) { o.video = &c } }

// WithAudioCodec sets the published audio codec (default Opus).
func WithAudioCodec(c webrtc.RTPCodecCapability) Option { return func(o *config) { o.audio = &c } }

// WithoutVideo publishes or plays no video.
func WithoutVideo() Option { return func(o *config) { o.noVideo = true } }

// WithoutAudio publishes or plays no audio.
func WithoutAudio() Option { return func(o *config) { o.noAudio = true } }

// WithBearer sends Authorization: Bearer on a WHEP POST.
func WithBearer(token string) Option { return func(o *config) { o.bearer = token } }

// WithHeader adds a header to the POST that creates the session.
func WithHeader(key, value string) Option {
	return func(o *config) {
		if o.header == nil {
			o.header = http.Header{}
		}
		o.header.Add(key, value)
	}
}

// WithRelayCodecs (player) offers every codec Backchannel's stream model
// carries, not only what browsers play: H.264 (both packetization modes),
// H.265, VP8, Opus, G.711, and AAC (RFC 3640 mpeg4-generic) at the usual
// sample rates, mono and stereo. It is how an edge pulls a stream from
// its origin: everything must get through, including what only HLS can
// deliver to a viewer.
func WithRelayCodecs() Option { return func(o *config) { o.relayCodecs = true } }

// WithICEServers sets STUN/TURN servers for the client's own gathering.
func WithICEServers(s ...webrtc.ICEServer) Option { return func(o *config) { o.iceServers = s } }

// OnRTP (player) is called for every received RTP packet, from one
// goroutine per track. The packet is valid only during the call.
func OnRTP(fn func(track *webrtc.TrackRemote, p *rtp.Packet)) Option {
	return func(o *config) { o.onRTP = fn }
}

// OnRTCP is called for every RTCP packet the server sends: sender reports
// to a player, feedback (PLI, NACK, receiver reports) to a publisher.
func OnRTCP(fn func(kind webrtc.RTPCodecType, p rtcp.Packet)) Option {
	return func(o *config) { o.onRTCP = fn }
}

// OnKeyframeRequest (publisher) is called for every PLI or FIR received.
func OnKeyframeRequest(fn func()) Option { return func(o *config) { o.onKeyframeReq = fn } }

func newConfig(opts []Option) *config {
	c := &config{}
	for _, o := range opts {
		o(c)
	}
	if c.httpClient == nil {
		c.httpClient = &http.Client{Timeout: 15 * time.Second}
	}
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	if c.settings == nil {
		se := DefaultSettingEngine()
		c.settings = &se
	}
	c.settings.LoggerFactory = rtc.LoggerFactory(c.logger)
	return c
}

// DefaultSettingEngine is what the clients use unless told otherwise:
// host candidates including loopback (servers under test listen there),
// no mDNS, UDP sockets with large kernel buffers.
func DefaultSettingEngine() webrtc.SettingEngine {
	var se webrtc.SettingEngine
	if n, err := stdnet.NewNet(); err == nil {
		se.SetNet(bufferedNet{n})
	}
	se.SetIncludeLoopbackCandidate(true)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6})
	se.SetSRTPProtectionProfiles(rtc.PreferredSRTPProfiles()...)
	return se
}

// clientBufferBytes is the kernel receive and send buffer of a client's
// UDP sockets. A relay or a player on a busy machine may not read for a
// moment; a keyframe burst must wait in the kernel rather than be
// dropped (the first packets of a stream cannot be asked for again).
const clientBufferBytes = 4 << 20

// bufferedNet is the standard network whose UDP sockets get
// clientBufferBytes.
type bufferedNet struct{ *stdnet.Net }

func (n bufferedNet) ListenUDP(network string, laddr *net.UDPAddr) (transport.UDPConn, error) {
	c, err := n.Net.ListenUDP(network, laddr)
	if u, ok := c.(*net.UDPConn); ok && err == nil {
		udpbuf.Grow(u, clientBufferBytes)
	}
	return c, err
}

// HTTPError is a signalling request the server refused.
type HTTPError struct {
	StatusCode int
	Detail     string        // the problem document's detail, or the body
	RetryAfter time.Duration // from Retry-After, if any
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("whipclient: server answered %d %s: %s", e.StatusCode, http.StatusText(e.StatusCode), e.Detail)
}

// session is what publisher and player share.
type session struct {
	pc       *webrtc.PeerConnection
	http     *http.Client
	resource string
	etag     string
	links    []string
	answerH  http.Header
	log      *slog.Logger

	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
	mu        sync.Mutex
	closed    bool
	wg        sync.WaitGroup
}

// ResourceURL is the absolute session URL (from Location).
func (s *session) ResourceURL() string { return s.resource }

// ETag is the session's entity tag from the POST answer.
func (s *session) ETag() string { return s.etag }

// Links are the Link header values of the POST answer (ICE servers).
func (s *session) Links() []string { return append([]string(nil), s.links...) }

// AnswerHeader is the header of the POST answer.
func (s *session) AnswerHeader() http.Header { return s.answerH.Clone() }

// PeerConnection exposes the underlying connection (stats, raw RTCP).
func (s *session) PeerConnection() *webrtc.PeerConnection { return s.pc }

// Done is closed when the connection fails or closes.
func (s *session) Done() <-chan struct{} { return s.done }

// goTracked starts a goroutine Close waits for, unless closing.
func (s *session) goTracked(f func()) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		f()
	}()
}

func (s *session) markDone() {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.done:
	default:
		close(s.done)
	}
}

// Close DELETEs the session resource (best effort, 5 s), closes the peer
// connection and waits for the client's goroutines.
func (s *session) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		var errs []error
		if s.resource != "" {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			req, err := http.NewRequestWithContext(ctx, http.MethodDelete, s.resource, nil)
			if err == nil {
				var resp *http.Response
				resp, err = s.http.Do(req)
				if err == nil {
					_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
					_ = resp.Body.Close()
					if resp.StatusCode >= 300 && resp.StatusCode != http.StatusNotFound {
						err = fmt.Errorf("whipclient: DELETE answered %d", resp.StatusCode)
					}
				}
			}
			cancel()
			if err != nil {
				errs = append(errs, err)
			}
		}
		errs = append(errs, s.pc.Close())
		s.markDone()
		s.wg.Wait()
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// negotiate sends the local offer, applies the answer and waits until the
// connection is up.
func (s *session) negotiate(ctx context.Context, endpoint, bearer string, header http.Header) error {
	s.pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		if st == webrtc.PeerConnectionStateFailed || st == webrtc.PeerConnectionStateClosed {
			s.markDone()
		}
	})
	offer, err := s.pc.CreateOffer(nil)
	if err != nil {
		return err
	}
	gathered := webrtc.GatheringCompletePromise(s.pc)
	if err := s.pc.SetLocalDescription(offer); err != nil {
		return err
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return ctx.Err()
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(s.pc.LocalDescription().SDP))
	if err != nil {
		return err
	}
	for k, v := range header {
		req.Header[k] = append([]string(nil), v...)
	}
	req.Header.Set("Content-Type", "application/sdp")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusCreated {
		return httpError(resp, body)
	}
	loc := resp.Header.Get("Location")
	if loc == "" {
		return errors.New("whipclient: 201 without Location")
	}
	ref, err := url.Parse(loc)
	if err != nil {
		return fmt.Errorf("whipclient: bad Location %q: %w", loc, err)
	}
	s.resource = resp.Request.URL.ResolveReference(ref).String()
	s.etag = resp.Header.Get("ETag")
	s.links = resp.Header.Values("Link")
	s.answerH = resp.Header

	if err := s.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(body)}); err != nil {
		return fmt.Errorf("whipclient: applying the answer: %w", err)
	}
	return s.waitConnected(ctx)
}

func (s *session) waitConnected(ctx context.Context) error {
	connected := make(chan struct{})
	var once sync.Once
	s.pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		switch st {
		case webrtc.PeerConnectionStateConnected:
			once.Do(func() { close(connected) })
		case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
			s.markDone()
		}
	})
	if s.pc.ConnectionState() == webrtc.PeerConnectionStateConnected {
		return nil
	}
	select {
	case <-connected:
		return nil
	case <-s.done:
		return errors.New("whipclient: connection failed")
	case <-ctx.Done():
		return ctx.Err()
	}
}

func httpError(resp *http.Response, body []byte) error {
	e := &HTTPError{StatusCode: resp.StatusCode, Detail: strings.TrimSpace(string(body))}
	var p struct {
		Detail string `json:"detail"`
		Title  string `json:"title"`
	}
	if json.Unmarshal(body, &p) == nil {
		if p.Detail != "" {
			e.Detail = p.Detail
		} else if p.Title != "" {
			e.Detail = p.Title
		}
	}
	if ra := resp.Header.Get("Retry-After"); ra != "" {
		if secs, err := strconv.Atoi(ra); err == nil {
			e.RetryAfter = time.Duration(secs) * time.Second
		}
	}
	return e
}

// readRTCP drains a sender's or receiver's RTCP, which also drives pion's
// interceptors, handing each packet to fn.
func readRTCP(read func() ([]rtcp.Packet, error), fn func(rtcp.Packet)) {
	for {
		pkts, err := read()
		if err != nil {
			return
		}
		for _, p := range pkts {
			fn(p)
		}
	}
}
