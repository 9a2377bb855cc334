package relay_test

import (
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	pionmedia "github.com/pion/webrtc/v4/pkg/media"

	"github.com/backchannel/backchannel/edge/relay"
	"github.com/backchannel/backchannel/internal/whipclient"
	"github.com/backchannel/backchannel/internal/whipclient/whiptest"
)

// arrivals records when each tagged frame reached one viewer.
type arrivals struct {
	mu sync.Mutex
	at map[uint32]time.Time
}

func newArrivals() *arrivals { return &arrivals{at: map[uint32]time.Time{}} }

func (a *arrivals) onRTP(_ *webrtc.TrackRemote, p *rtp.Packet) {
	now := time.Now()
	if tag, ok := frameTag(p.Payload); ok {
		a.mu.Lock()
		if _, seen := a.at[tag]; !seen {
			a.at[tag] = now
		}
		a.mu.Unlock()
	}
}

func (a *arrivals) get(tag uint32) (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	t, ok := a.at[tag]
	return t, ok
}

// taggedFrame is a one-packet non-IDR H.264 frame carrying tag in its
// first three payload bytes after the NAL header (never zero, so no start
// code appears).
func taggedFrame(r *rand.Rand, tag uint32) []byte {
	f := []byte{0, 0, 0, 1, 0x41, byte(tag>>14) | 0x80, byte(tag>>7) | 0x80, byte(tag) | 0x80}
	for range 700 + r.IntN(300) {
		f = append(f, byte(1+r.IntN(255)))
	}
	return f
}

func frameTag(payload []byte) (uint32, bool) {
	if len(payload) < 4 || payload[0]&0x1f != 1 || payload[1]&0x80 == 0 {
		return 0, false
	}
	return uint32(payload[1]&0x7f)<<14 | uint32(payload[2]&0x7f)<<7 | uint32(payload[3]&0x7f), true
}

// BenchmarkRelayHopLatency measures what one relay hop (origin → edge over
// server-to-server WHEP) adds to a viewer's latency: a publisher sends
// one-packet frames at 30 fps to an origin; one viewer plays from the
// origin, another from an edge that pulls the stream from the origin. Each
// frame's arrival at both viewers is taken against the moment the
// publisher wrote it (the frame is stamped at that moment, so this is the
// RTP-timestamp-to-arrival latency without relying on clock-rate
// arithmetic), and the hop is edge arrival − origin arrival, frame by
// frame. b.N is the number of frames.
//
//	go test -run '^$' -bench RelayHopLatency -benchtime 600x -count 3 ./edge/relay/
func BenchmarkRelayHopLatency(b *testing.B) {
	origin := whiptest.Start(b, whiptest.Options{})
	pub, err := whipclient.Publish(ctxFor(b, 10*time.Second), origin.WHIP("s"), whiptest.Key, whipclient.WithoutAudio())
	if err != nil {
		b.Fatal(err)
	}
	defer pub.Close()
	origin.WaitLive(b, "s")
	r := rand.New(rand.NewPCG(1, 2))
	key := whiptest.H264Frames(1, 1, 3)[0]
	if err := pub.WriteVideo(pionmedia.Sample{Data: key, Duration: time.Second / 30}); err != nil {
		b.Fatal(err)
	}

	e := startEdge(b, "e1", relay.Parent(origin.URL), time.Second)
	atOrigin, atEdge := newArrivals(), newArrivals()
	for _, v := range []struct {
		url string
		a   *arrivals
	}{{origin.URL + "/whep/s", atOrigin}, {e.URL + "/whep/s", atEdge}} {
		p, err := whipclient.Play(ctxFor(b, 10*time.Second), v.url, whipclient.WithoutAudio(), whipclient.OnRTP(v.a.onRTP))
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
	}

	// Warm up until both viewers get live frames, then measure fresh tags.
	tag := uint32(1)
	send := func() (uint32, time.Time) {
		f := taggedFrame(r, tag)
		at := time.Now()
		_ = pub.WriteVideo(pionmedia.Sample{Data: f, Duration: time.Second / 30})
		tag++
		return tag - 1, at
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		t, _ := send()
		time.Sleep(time.Second / 30)
		_, o := atOrigin.get(t)
		_, e := atEdge.get(t)
		if o && e {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("viewers did not get live frames")
		}
	}

	type sent struct {
		tag uint32
		at  time.Time
	}
	var frames []sent
	tick := time.NewTicker(time.Second / 30)
	defer tick.Stop()
	b.ResetTimer()
	for range b.N {
		<-tick.C
		t, at := send()
		frames = append(frames, sent{t, at})
	}
	b.StopTimer()
	time.Sleep(300 * time.Millisecond)

	var originMs, edgeMs, hopMs []float64
	lost := 0
	for _, f := range frames {
		o, ok1 := atOrigin.get(f.tag)
		e, ok2 := atEdge.get(f.tag)
		if !ok1 || !ok2 {
			lost++
			continue
		}
		originMs = append(originMs, ms(o.Sub(f.at)))
		edgeMs = append(edgeMs, ms(e.Sub(f.at)))
		hopMs = append(hopMs, ms(e.Sub(o)))
	}
	if len(hopMs) == 0 {
		b.Fatal("no frame reached both viewers")
	}
	b.ReportMetric(quantile(originMs, 0.5), "origin-p50-ms")
	b.ReportMetric(quantile(edgeMs, 0.5), "edge-p50-ms")
	b.ReportMetric(quantile(hopMs, 0.5), "hop-p50-ms")
	b.ReportMetric(quantile(hopMs, 0.99), "hop-p99-ms")
	b.ReportMetric(float64(lost), "lost")
	b.ReportMetric(0, "ns/op")
	b.Logf("%d frames: origin p50 %.3f p99 %.3f ms; edge p50 %.3f p99 %.3f ms; hop p50 %.3f p99 %.3f ms; lost %d",
		len(hopMs), quantile(originMs, 0.5), quantile(originMs, 0.99), quantile(edgeMs, 0.5), quantile(edgeMs, 0.99),
		quantile(hopMs, 0.5), quantile(hopMs, 0.99), lost)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func quantile(v []float64, q float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}
