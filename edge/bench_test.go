package edge_test

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"slices"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	pionmedia "github.com/pion/webrtc/v4/pkg/media"

	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/whipclient"
	"github.com/backchannel/backchannel/internal/whipclient/whiptest"
)

// probeNAL is a ~1000-byte H.264 NAL unit (one RTP packet) carrying id in
// hex, so no zero byte (start code) can appear in it. The first probe is an
// IDR, so a viewer waiting for a keyframe starts at it.
func probeNAL(id uint64, idr bool) []byte {
	nal := make([]byte, 1000)
	nal[0] = 0x41
	if idr {
		nal[0] = 0x65
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], id)
	hex.Encode(nal[1:17], b[:])
	for i := 17; i < len(nal); i++ {
		nal[i] = 0x5a
	}
	return nal
}

func probeID(payload []byte) (uint64, bool) {
	if len(payload) < 17 {
		return 0, false
	}
	var b [8]byte
	if _, err := hex.Decode(b[:], payload[1:17]); err != nil {
		return 0, false
	}
	return binary.BigEndian.Uint64(b[:]), true
}

type arrival struct {
	id uint64
	at time.Time
}

// pipeline sends probes and times their arrival at a receiver.
type pipeline struct {
	send    func(nal []byte) error
	arrived chan arrival
	next    uint64
	lat     []time.Duration
}

func (p *pipeline) onRTP(_ *webrtc.TrackRemote, pkt *rtp.Packet) {
	if id, ok := probeID(pkt.Payload); ok {
		select {
		case p.arrived <- arrival{id: id, at: time.Now()}:
		default:
		}
	}
}

// probe sends one packet and waits for it; it returns the one-way latency.
func (p *pipeline) probe(b *testing.B, idr bool) time.Duration {
	p.next++
	id := p.next
	sent := time.Now()
	if err := p.send(probeNAL(id, idr)); err != nil {
		b.Fatal(err)
	}
	timeout := time.After(2 * time.Second)
	for {
		select {
		case a := <-p.arrived:
			if a.id == id {
				return a.at.Sub(sent)
			}
		case <-timeout:
			b.Fatalf("probe %d lost", id)
		}
	}
}

// warm sends keyframe probes until one arrives (viewers start at a keyframe).
func (p *pipeline) warm(b *testing.B) {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		p.next++
		if err := p.send(probeNAL(p.next, true)); err != nil {
			b.Fatal(err)
		}
		select {
		case <-p.arrived:
			for range 20 {
				p.probe(b, false)
			}
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	b.Fatal("pipeline never delivered")
}

func sample(nal []byte, send func(pionmedia.Sample) error) error {
	return send(pionmedia.Sample{Data: append([]byte{0, 0, 0, 1}, nal...), Duration: time.Second / 30})
}

// directPipeline connects a pion publisher straight to a pion viewer, with
// the same codecs, interceptors and settings as the WHIP/WHEP clients: the
// baseline a server in between is measured against.
func directPipeline(b *testing.B) *pipeline {
	newAPI := func() *webrtc.API {
		me := &webrtc.MediaEngine{}
		if err := me.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: whipclient.H264, PayloadType: 102}, webrtc.RTPCodecTypeVideo); err != nil {
			b.Fatal(err)
		}
		ir := &interceptor.Registry{}
		if err := webrtc.RegisterDefaultInterceptors(me, ir); err != nil {
			b.Fatal(err)
		}
		return webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir),
			webrtc.WithSettingEngine(whipclient.DefaultSettingEngine()))
	}
	sender, err := newAPI().NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		b.Fatal(err)
	}
	receiver, err := newAPI().NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sender.Close(); _ = receiver.Close() })
	track, err := webrtc.NewTrackLocalStaticSample(whipclient.H264, "video", "direct")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := sender.AddTransceiverFromTrack(track, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
		b.Fatal(err)
	}
	p := &pipeline{arrived: make(chan arrival, 64), send: func(nal []byte) error { return sample(nal, track.WriteSample) }}
	receiver.OnTrack(func(t *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		buf := make([]byte, 1500)
		var pkt rtp.Packet
		for {
			n, _, err := t.Read(buf)
			if err != nil {
				return
			}
			if pkt.Unmarshal(buf[:n]) == nil {
				p.onRTP(t, &pkt)
			}
		}
	})
	offer, err := sender.CreateOffer(nil)
	if err != nil {
		b.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(sender)
	_ = sender.SetLocalDescription(offer)
	<-gathered
	if err := receiver.SetRemoteDescription(*sender.LocalDescription()); err != nil {
		b.Fatal(err)
	}
	answer, err := receiver.CreateAnswer(nil)
	if err != nil {
		b.Fatal(err)
	}
	gathered = webrtc.GatheringCompletePromise(receiver)
	_ = receiver.SetLocalDescription(answer)
	<-gathered
	if err := sender.SetRemoteDescription(*receiver.LocalDescription()); err != nil {
		b.Fatal(err)
	}
	return p
}

func whipWhepPipeline(b *testing.B) *pipeline {
	srv := whiptest.Start(b, whiptest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pub, err := whipclient.Publish(ctx, srv.WHIP("bench"), whiptest.Key, whipclient.WithoutAudio())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = pub.Close() })
	srv.WaitLive(b, "bench")
	p := &pipeline{arrived: make(chan arrival, 64), send: func(nal []byte) error { return sample(nal, pub.WriteVideo) }}
	player, err := whipclient.Play(ctx, srv.WHEP("bench"), whipclient.WithoutAudio(), whipclient.OnRTP(p.onRTP))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = player.Close() })
	srv.WaitSinks(b, "bench", media.KindVideo, 1)
	return p
}

func quantile(d []time.Duration, q float64) float64 {
	s := slices.Clone(d)
	slices.Sort(s)
	return float64(s[int(q*float64(len(s)-1))].Microseconds())
}

// BenchmarkWHIPToWHEPLatency measures the one-way latency a WHIP→WHEP hop
// through the server adds on loopback: publisher send time to viewer
// receive time per packet, against a baseline in the same run of a pion
// publisher connected straight to a pion viewer. Probes alternate between
// the two paths, one packet in flight at a time.
//
//	go test -run '^$' -bench WHIPToWHEPLatency -benchtime 3000x ./edge/
func BenchmarkWHIPToWHEPLatency(b *testing.B) {
	direct := directPipeline(b)
	server := whipWhepPipeline(b)
	direct.warm(b)
	server.warm(b)
	for b.Loop() {
		direct.lat = append(direct.lat, direct.probe(b, false))
		server.lat = append(server.lat, server.probe(b, false))
	}
	b.StopTimer()
	dp50, dp99 := quantile(direct.lat, 0.5), quantile(direct.lat, 0.99)
	sp50, sp99 := quantile(server.lat, 0.5), quantile(server.lat, 0.99)
	b.ReportMetric(sp50, "whep-p50-µs")
	b.ReportMetric(sp99, "whep-p99-µs")
	b.ReportMetric(dp50, "direct-p50-µs")
	b.ReportMetric(dp99, "direct-p99-µs")
	b.ReportMetric(sp50/dp50, "p50-ratio")
	b.ReportMetric(sp99/dp99, "p99-ratio")
	b.ReportMetric(0, "ns/op")
}
