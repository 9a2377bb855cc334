package relay_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	pionmedia "github.com/pion/webrtc/v4/pkg/media"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/backchannel/backchannel/edge"
	"github.com/backchannel/backchannel/edge/relay"
	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/rtc"
	"github.com/backchannel/backchannel/internal/whipclient"
	"github.com/backchannel/backchannel/internal/whipclient/whiptest"
)

// edgeNode is a WHEP edge with its own registry and ICE port whose streams
// come through a relay.
type edgeNode struct {
	URL      string
	Registry *media.Registry
	Edge     *edge.Server
	Relay    *relay.Relay
	Metrics  *prometheus.Registry
}

func startEdge(t testing.TB, id string, origins relay.Origins, linger time.Duration) *edgeNode {
	t.Helper()
	tr, err := rtc.Listen(rtc.Config{ICEAddr: "127.0.0.1:0", Logger: whiptest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	n := &edgeNode{Registry: media.NewRegistry(id), Metrics: prometheus.NewRegistry()}
	n.Relay, err = relay.New(relay.Config{Node: id, Registry: n.Registry, Origins: origins, Linger: linger,
		Logger: whiptest.Logger(), Metrics: n.Metrics})
	if err != nil {
		t.Fatal(err)
	}
	n.Edge, err = edge.New(edge.Config{ID: id, Registry: n.Registry, RTC: tr, Upstream: n.Relay,
		Logger: whiptest.Logger(), Metrics: n.Metrics})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/whep/", n.Edge.Handler())
	hs := httptest.NewServer(mux)
	n.URL = hs.URL
	t.Cleanup(func() {
		hs.Close()
		_ = n.Edge.Close()
		_ = n.Relay.Close()
		n.Registry.Close()
		_ = tr.Close()
	})
	return n
}

func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type tap struct{ video, audio whiptest.Collector }

func (tp *tap) onRTP(t *webrtc.TrackRemote, p *rtp.Packet) {
	if t.Kind() == webrtc.RTPCodecTypeVideo {
		tp.video.Add(p)
	} else {
		tp.audio.Add(p)
	}
}

// An edge with no stream of its own pulls one from the origin when a
// viewer asks for it: the viewer gets every frame (from the origin's GOP
// cache, then live) and the audio; a keyframe request from the viewer
// reaches the publisher; the pull ends a linger time after the viewer
// left, and the origin loses its relay session.
func TestRelayPullsOnDemandAndLetsGo(t *testing.T) {
	origin := whiptest.Start(t, whiptest.Options{})
	var plis atomic.Int32
	pub, err := whipclient.Publish(ctxFor(t, 10*time.Second), origin.WHIP("s"), whiptest.Key, whipclient.OnKeyframeRequest(func() { plis.Add(1) }))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	origin.WaitLive(t, "s")
	frames := whiptest.H264Frames(90, 1000, 21)
	for _, f := range frames[:30] {
		_ = pub.WriteVideo(pionmedia.Sample{Data: f, Duration: time.Second / 30})
		_ = pub.WriteAudio(pionmedia.Sample{Data: []byte{0xfc, 1, 2, 3}, Duration: 20 * time.Millisecond})
		time.Sleep(3 * time.Millisecond)
	}

	e := startEdge(t, "e1", relay.Parent(origin.URL), 500*time.Millisecond)
	var tp tap
	start := time.Now()
	player, err := whipclient.Play(ctxFor(t, 10*time.Second), e.URL+"/whep/s", whipclient.OnRTP(tp.onRTP))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the replayed GOP through the relay", 5*time.Second, func() bool { f, _ := tp.video.H264Frames(); return len(f) >= 30 })
	t.Logf("first 30 frames through the relay %v after the POST", time.Since(start).Round(time.Millisecond))
	for _, f := range frames[30:] {
		_ = pub.WriteVideo(pionmedia.Sample{Data: f, Duration: time.Second / 30})
		_ = pub.WriteAudio(pionmedia.Sample{Data: []byte{0xfc, 1, 2, 3}, Duration: 20 * time.Millisecond})
		time.Sleep(3 * time.Millisecond)
	}
	waitFor(t, "every frame", 5*time.Second, func() bool { f, _ := tp.video.H264Frames(); return len(f) == len(frames) })
	got, _ := tp.video.H264Frames()
	if err := whiptest.EqualFrames(frames, got); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "audio", 5*time.Second, func() bool { return tp.audio.Len() > 30 })
	info := e.Registry.List()
	if len(info) != 1 || info[0].Protocol != media.ProtocolRelay || len(info[0].Tracks) != 2 {
		t.Fatalf("edge streams %+v", info)
	}
	if up, ok := e.Relay.Upstream("s"); !ok || up.URL != origin.URL {
		t.Fatalf("upstream %+v %v", up, ok)
	}
	if plis.Load() != 0 {
		t.Fatal("the relayed viewer's start needed a keyframe request")
	}

	// A viewer's PLI travels edge → origin → publisher.
	var ssrc uint32
	for _, tr := range player.PeerConnection().GetTransceivers() {
		if tr.Kind() == webrtc.RTPCodecTypeVideo {
			ssrc = uint32(tr.Receiver().Track().SSRC())
		}
	}
	if err := player.PeerConnection().WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: ssrc}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the PLI at the publisher", 5*time.Second, func() bool { return plis.Load() > 0 })

	if origin.Edge.Viewers() != 1 {
		t.Fatalf("origin has %d WHEP sessions, want the relay's", origin.Edge.Viewers())
	}
	_ = player.Close()
	waitFor(t, "the relay to let go", 5*time.Second, func() bool { return len(e.Relay.Streams()) == 0 })
	waitFor(t, "the origin session to end", 5*time.Second, func() bool { return origin.Edge.Viewers() == 0 })
	if st, ok := e.Registry.Current("s"); ok && st.Live() {
		t.Fatal("the relayed stream is still live on the edge")
	}
}

// A stream that is not on air anywhere: the edge answers 409 at once.
func TestRelayUnknownStreamIs409(t *testing.T) {
	origin := whiptest.Start(t, whiptest.Options{})
	e := startEdge(t, "e1", relay.Parent(origin.URL), time.Second)
	start := time.Now()
	_, err := whipclient.Play(ctxFor(t, 10*time.Second), e.URL+"/whep/nothing")
	var he *whipclient.HTTPError
	if !errors.As(err, &he) || he.StatusCode != http.StatusConflict {
		t.Fatalf("play: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("took %v to find out", d)
	}
	if err := e.Relay.Pull(context.Background(), "nothing"); !errors.Is(err, relay.ErrNotFound) {
		t.Fatalf("Pull: %v", err)
	}
}

// Everything the stream model carries crosses a relay, browsers' codecs or
// not: H.265 and AAC arrive on the edge with the origin's exact codec
// parameters, packets intact.
func TestRelayCarriesH265AndAAC(t *testing.T) {
	origin := whiptest.Start(t, whiptest.Options{})
	h265 := media.Codec{MimeType: media.MimeH265, ClockRate: 90000, Fmtp: "sprop-vps=QAEMAf//AWAAAAMAkAAAAwAAAwBdlZgJ"}
	aac := media.Codec{MimeType: media.MimeAAC, ClockRate: 44100, Channels: 2,
		Fmtp: "streamtype=5;profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3;config=1210"}
	pub, err := origin.Registry.Publish("hevc", media.PublisherInfo{Protocol: media.ProtocolRTSP}, []media.Codec{h265, aac}, nopSource{})
	if err != nil {
		t.Fatal(err)
	}
	vw, _ := pub.Track(media.KindVideo)
	aw, _ := pub.Track(media.KindAudio)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			// An IDR (type 19) every 30 frames, trailing pictures (type 1)
			// between them; AAC access units with their AU header.
			nal := []byte{0x02, 0x01, byte(i), 0x55}
			if i%30 == 0 {
				nal = []byte{19 << 1, 0x01, byte(i), 0x55}
			}
			_ = vw.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, Marker: true, SequenceNumber: uint16(i), Timestamp: uint32(i * 900), SSRC: 1}, Payload: nal})
			_ = aw.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, Marker: true, SequenceNumber: uint16(i), Timestamp: uint32(i * 441), SSRC: 2},
				Payload: []byte{0x00, 0x10, 0x00, 0x20, byte(i), 0x21, 0x22, 0x23}})
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	e := startEdge(t, "e1", relay.Parent(origin.URL), time.Second)
	if err := e.Relay.Pull(ctxFor(t, 10*time.Second), "hevc"); err != nil {
		t.Fatal(err)
	}
	st, _ := e.Registry.Current("hevc")
	var video, audio collectSink
	for _, tr := range st.Tracks() {
		s := &video
		if tr.Kind() == media.KindAudio {
			s = &audio
		}
		remove, err := tr.AddSink(s)
		if err != nil {
			t.Fatal(err)
		}
		defer remove()
		want := h265
		if tr.Kind() == media.KindAudio {
			want = aac
		}
		if tr.Codec() != want {
			t.Fatalf("%s codec on the edge %+v, origin's %+v", tr.Kind(), tr.Codec(), want)
		}
	}
	waitFor(t, "H.265 and AAC packets on the edge", 5*time.Second, func() bool { return video.count() > 40 && audio.count() > 40 })
	if p := audio.last(); len(p) != 8 || p[0] != 0 || p[1] != 0x10 || p[5] != 0x21 {
		t.Fatalf("AAC payload on the edge %x", p)
	}
}

type nopSource struct{}

func (nopSource) RequestKeyframe(media.Kind) {}
func (nopSource) Close() error               { return nil }

type collectSink struct {
	mu   sync.Mutex
	n    int
	tail []byte
}

func (c *collectSink) WriteRTP(p *media.Packet) {
	c.mu.Lock()
	c.n++
	c.tail = append(c.tail[:0], p.Payload...)
	c.mu.Unlock()
}
func (c *collectSink) WriteSenderReport(media.SenderReport) {}
func (c *collectSink) Detached(error)                       {}
func (c *collectSink) count() int                           { c.mu.Lock(); defer c.mu.Unlock(); return c.n }
func (c *collectSink) last() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]byte(nil), c.tail...)
}
