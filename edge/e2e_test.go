package edge_test

import (
	"context"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	pionmedia "github.com/pion/webrtc/v4/pkg/media"

	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/whipclient"
	"github.com/backchannel/backchannel/internal/whipclient/whiptest"
)

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// viewerTap collects what a WHEP player receives, per kind.
type viewerTap struct {
	video, audio whiptest.Collector
	srs          chan *rtcp.SenderReport
}

func newTap() *viewerTap { return &viewerTap{srs: make(chan *rtcp.SenderReport, 64)} }

func (v *viewerTap) options() []whipclient.Option {
	return []whipclient.Option{
		whipclient.OnRTP(func(t *webrtc.TrackRemote, p *rtp.Packet) {
			if t.Kind() == webrtc.RTPCodecTypeVideo {
				v.video.Add(p)
			} else {
				v.audio.Add(p)
			}
		}),
		whipclient.OnRTCP(func(_ webrtc.RTPCodecType, p rtcp.Packet) {
			if sr, ok := p.(*rtcp.SenderReport); ok {
				select {
				case v.srs <- sr:
				default:
				}
			}
		}),
		whipclient.WithLogger(whiptest.Logger()),
	}
}

func publish(t *testing.T, srv *whiptest.Server, stream string, opts ...whipclient.Option) *whipclient.Publisher {
	t.Helper()
	opts = append([]whipclient.Option{whipclient.WithLogger(whiptest.Logger())}, opts...)
	pub, err := whipclient.Publish(ctxFor(t, 10*time.Second), srv.WHIP(stream), whiptest.Key, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Close() })
	srv.WaitLive(t, stream)
	return pub
}

func play(t *testing.T, srv *whiptest.Server, stream string, opts ...whipclient.Option) *whipclient.Player {
	t.Helper()
	p, err := whipclient.Play(ctxFor(t, 10*time.Second), srv.WHEP(stream), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
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

func sendFrames(t *testing.T, pub *whipclient.Publisher, frames [][]byte, gap time.Duration) {
	t.Helper()
	for _, f := range frames {
		if err := pub.WriteVideo(pionmedia.Sample{Data: f, Duration: time.Second / 30}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(gap)
	}
}

// A known H.264 stream goes in through WHIP; two WHEP viewers that joined
// before it started get every frame, byte for byte, in order.
func TestWHIPToWHEPDeliversEveryFrame(t *testing.T) {
	t.Run("ipv4", func(t *testing.T) { testWHIPToWHEPDeliversEveryFrame(t, "127.0.0.1:0") })
	// The production default binds the ICE mux on every address (an
	// AF_INET6 socket taking IPv4 too): the direct path's sendmmsg must
	// reach IPv4 viewers through it.
	t.Run("dual-stack", func(t *testing.T) { testWHIPToWHEPDeliversEveryFrame(t, ":0") })
}

func testWHIPToWHEPDeliversEveryFrame(t *testing.T, iceAddr string) {
	srv := whiptest.Start(t, whiptest.Options{ICEAddr: iceAddr})
	pub := publish(t, srv, "e2e", whipclient.WithoutAudio())

	taps := []*viewerTap{newTap(), newTap()}
	var players []*whipclient.Player
	for _, tap := range taps {
		players = append(players, play(t, srv, "e2e", tap.options()...))
	}
	srv.WaitSinks(t, "e2e", media.KindVideo, 2)
	for _, p := range players {
		if c, ok := p.Codec(webrtc.RTPCodecTypeVideo); !ok || c.MimeType != webrtc.MimeTypeH264 {
			t.Fatalf("viewer negotiated %+v, want H264", c)
		}
	}

	frames := whiptest.H264Frames(120, 30, 1)
	sendFrames(t, pub, frames, 4*time.Millisecond)

	for i, tap := range taps {
		var got [][]byte
		waitFor(t, "all frames at the viewer", 10*time.Second, func() bool {
			got, _ = tap.video.H264Frames()
			return len(got) >= len(frames)
		})
		if err := whiptest.EqualFrames(frames, got); err != nil {
			t.Fatalf("viewer %d: %v", i, err)
		}
		pkts := tap.video.Ordered()
		for j := 1; j < len(pkts); j++ {
			if pkts[j].SSRC != pkts[0].SSRC {
				t.Fatalf("viewer %d: SSRC changed mid-stream", i)
			}
		}
	}
	if got := srv.Edge.Viewers(); got != 2 {
		t.Fatalf("Viewers() = %d, want 2", got)
	}
	if n := metricValue(t, srv.EdgeMetrics, "backchannel_whep_direct_viewers_total"); n != 2 {
		t.Fatalf("%v viewers on the direct path, want 2", n)
	}
	for _, p := range players {
		if err := p.Close(); err != nil {
			t.Fatalf("player Close: %v", err)
		}
	}
	waitFor(t, "viewers gone", 5*time.Second, func() bool { return srv.Edge.Viewers() == 0 })
}

// Publishing over ICE-TCP (the passive candidates on the mux port) works
// end to end.
func TestPublishOverICETCP(t *testing.T) {
	srv := whiptest.Start(t, whiptest.Options{})
	se := whipclient.DefaultSettingEngine()
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeTCP4})
	pub := publish(t, srv, "tcp", whipclient.WithoutAudio(), whipclient.WithSettingEngine(se))
	pair, err := pub.PeerConnection().SCTP().Transport().ICETransport().GetSelectedCandidatePair()
	if err != nil || pair == nil || pair.Local.Protocol != webrtc.ICEProtocolTCP {
		t.Fatalf("selected pair %v (%v), want TCP", pair, err)
	}
	tap := newTap()
	play(t, srv, "tcp", tap.options()...)
	srv.WaitSinks(t, "tcp", media.KindVideo, 1)
	frames := whiptest.H264Frames(30, 30, 9)
	sendFrames(t, pub, frames, 5*time.Millisecond)
	waitFor(t, "frames over TCP", 5*time.Second, func() bool { f, _ := tap.video.H264Frames(); return len(f) == len(frames) })
	got, _ := tap.video.H264Frames()
	if err := whiptest.EqualFrames(frames, got); err != nil {
		t.Fatal(err)
	}
}
