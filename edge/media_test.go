package edge_test

import (
	"bytes"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	pionmedia "github.com/pion/webrtc/v4/pkg/media"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/whipclient"
	"github.com/backchannel/backchannel/internal/whipclient/whiptest"
)

func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

// opusFrames makes distinct fake Opus packets (TOC byte of a 20 ms CELT
// frame, then random bytes).
func opusFrames(n int) [][]byte {
	r := rand.New(rand.NewPCG(7, 7))
	out := make([][]byte, n)
	for i := range out {
		f := []byte{0xfc, byte(i >> 8), byte(i)}
		for range 40 + r.IntN(80) {
			f = append(f, byte(r.Uint32()))
		}
		out[i] = f
	}
	return out
}

// A second publisher with the same key takes the stream over; a viewer
// that stays connected keeps one SSRC and continuous sequence numbers, and
// its timestamps keep increasing.
func TestTakeoverKeepsViewerContinuous(t *testing.T) {
	srv := whiptest.Start(t, whiptest.Options{})
	var events []media.Event
	var evMu sync.Mutex
	srv.Registry.Subscribe(func(e media.Event) { evMu.Lock(); events = append(events, e); evMu.Unlock() })

	first := publish(t, srv, "live")
	tap := newTap()
	viewer := play(t, srv, "live", tap.options()...)
	srv.WaitSinks(t, "live", media.KindVideo, 1)

	// The first publisher streams until it is replaced.
	frames := whiptest.H264Frames(400, 30, 2)
	audio := opusFrames(1000)
	var sent atomic.Int32
	stopFirst := make(chan struct{})
	firstDone := make(chan struct{})
	go func() {
		defer close(firstDone)
		for i := 0; ; i++ {
			select {
			case <-stopFirst:
				return
			case <-first.Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
			_ = first.WriteVideo(pionmedia.Sample{Data: frames[i%len(frames)], Duration: time.Second / 30})
			_ = first.WriteAudio(pionmedia.Sample{Data: audio[i%len(audio)], Duration: 20 * time.Millisecond})
			sent.Add(1)
		}
	}()
	waitFor(t, "packets from the first publisher", 5*time.Second, func() bool { return tap.video.Len() > 20 && tap.audio.Len() > 20 })
	beforeVideo, beforeAudio := tap.video.Len(), tap.audio.Len()

	second := publish(t, srv, "live")
	select {
	case <-first.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("first publisher not disconnected by the takeover")
	}
	close(stopFirst)
	<-firstDone
	// The new publisher starts its own numbering, with a keyframe.
	sendFrames(t, second, frames[:60], 10*time.Millisecond)
	for _, a := range audio[:30] {
		_ = second.WriteAudio(pionmedia.Sample{Data: a, Duration: 20 * time.Millisecond})
	}
	waitFor(t, "packets from the second publisher", 5*time.Second, func() bool {
		return tap.video.Len() > beforeVideo+60 && tap.audio.Len() > beforeAudio+25
	})

	select {
	case <-viewer.Done():
		t.Fatal("viewer disconnected by a same-codec takeover")
	default:
	}
	for name, c := range map[string]*whiptest.Collector{"video": &tap.video, "audio": &tap.audio} {
		pkts := c.Ordered()
		for i := 1; i < len(pkts); i++ {
			if pkts[i].SSRC != pkts[0].SSRC {
				t.Fatalf("%s: SSRC changed from %x to %x", name, pkts[0].SSRC, pkts[i].SSRC)
			}
			if pkts[i].SequenceNumber != pkts[i-1].SequenceNumber+1 {
				t.Fatalf("%s: sequence gap or reset at packet %d: %d then %d", name, i, pkts[i-1].SequenceNumber, pkts[i].SequenceNumber)
			}
			if d := int32(pkts[i].Timestamp - pkts[i-1].Timestamp); d < 0 {
				t.Fatalf("%s: timestamp went back at packet %d: %d then %d", name, i, pkts[i-1].Timestamp, pkts[i].Timestamp)
			}
		}
	}
	// The video after the switch is exactly the second publisher's frames:
	// its first packet was a keyframe, nothing of the first one mixed in.
	all, err := tap.video.H264Frames()
	if err != nil {
		t.Fatal(err)
	}
	if err := whiptest.EqualFrames(frames[:60], all[len(all)-60:]); err != nil {
		t.Fatalf("frames after takeover: %v", err)
	}
	evMu.Lock()
	defer evMu.Unlock()
	for _, e := range events {
		if !e.Live {
			t.Fatal("takeover produced an offline event")
		}
	}
}

// A takeover that changes the video codec cannot continue for existing
// viewers: they are disconnected and reconnect.
func TestTakeoverWithNewCodecClosesViewers(t *testing.T) {
	srv := whiptest.Start(t, whiptest.Options{})
	publish(t, srv, "s", whipclient.WithoutAudio())
	viewer := play(t, srv, "s")
	srv.WaitSinks(t, "s", media.KindVideo, 1)
	publish(t, srv, "s", whipclient.WithoutAudio(), whipclient.WithVideoCodec(whipclient.VP8))
	waitFor(t, "edge to drop the viewer", 10*time.Second, func() bool { return srv.Edge.Viewers() == 0 })
	// The viewer hears of it from the DTLS close alert, at once; should
	// that one datagram be lost (a loaded machine's full socket buffer),
	// from ICE consent failing, within pion's 5 s + 25 s.
	select {
	case <-viewer.Done():
	case <-time.After(35 * time.Second):
		t.Fatal("viewer's connection still up after the edge dropped it")
	}
	// A new viewer gets the new codec.
	again := play(t, srv, "s")
	if c, ok := again.Codec(webrtc.RTPCodecTypeVideo); !ok || c.MimeType != webrtc.MimeTypeVP8 {
		t.Fatalf("new viewer codec %+v, want VP8", c)
	}
}

// Opus reaches the viewer untouched, and the publisher's sender reports
// arrive rewritten: the viewer's SSRC and an RTP time on the timeline of
// the packets it receives.
func TestAudioAndSenderReports(t *testing.T) {
	eachSendPath(t, testAudioAndSenderReports)
}

// eachSendPath runs a test against the direct sending path (our own SRTP
// contexts, batched sends) and against pion's SRTP session, and checks
// that the direct one was taken when asked for.
func eachSendPath(t *testing.T, test func(t *testing.T, opts whiptest.Options) *whiptest.Server) {
	for _, pion := range []bool{false, true} {
		name := "direct"
		if pion {
			name = "pion"
		}
		t.Run(name, func(t *testing.T) {
			srv := test(t, whiptest.Options{PionSRTP: pion})
			direct := metricValue(t, srv.EdgeMetrics, "backchannel_whep_direct_viewers_total")
			if want := map[bool]float64{false: 1, true: 0}[pion]; direct != want {
				t.Fatalf("%v viewers on the direct path, want %v", direct, want)
			}
		})
	}
}

func testAudioAndSenderReports(t *testing.T, o whiptest.Options) *whiptest.Server {
	srv := whiptest.Start(t, o)
	pub := publish(t, srv, "radio", whipclient.WithoutVideo())
	tap := newTap()
	type lastPkt struct {
		ts uint32
		at time.Time
	}
	var last atomic.Pointer[lastPkt]
	opts := append(tap.options(), whipclient.OnRTP(func(tr *webrtc.TrackRemote, p *rtp.Packet) {
		tap.audio.Add(p)
		last.Store(&lastPkt{ts: p.Timestamp, at: time.Now()})
	}))
	player := play(t, srv, "radio", opts...)
	srv.WaitSinks(t, "radio", media.KindAudio, 1)
	if c, ok := player.Codec(webrtc.RTPCodecTypeAudio); !ok || c.MimeType != webrtc.MimeTypeOpus {
		t.Fatalf("audio codec %+v", c)
	}

	frames := opusFrames(120) // 2.4 s
	stop := make(chan struct{})
	go func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for _, f := range frames {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			_ = pub.WriteAudio(pionmedia.Sample{Data: f, Duration: 20 * time.Millisecond})
		}
	}()
	defer close(stop)

	var sr *rtcp.SenderReport
	var srAt time.Time
	deadline := time.After(6 * time.Second)
	for sr == nil {
		select {
		case r := <-tap.srs:
			if tap.audio.Len() > 0 {
				sr, srAt = r, time.Now()
			}
		case <-deadline:
			t.Fatal("no sender report reached the viewer")
		}
	}
	tracks := player.Tracks()
	if len(tracks) != 1 || uint32(tracks[0].SSRC()) != sr.SSRC {
		t.Fatalf("sender report SSRC %x, viewer track SSRC %v", sr.SSRC, tracks)
	}
	lp := last.Load()
	expected := lp.ts + uint32(srAt.Sub(lp.at).Seconds()*48000)
	if d := int32(sr.RTPTime - expected); d < -48000/10 || d > 48000/10 {
		t.Fatalf("sender report RTP time %d is %d ticks (%.0f ms) off the received timeline", sr.RTPTime, d, float64(d)/48)
	}
	if sr.PacketCount == 0 || sr.OctetCount == 0 || int(sr.PacketCount) > tap.audio.Len()+5 {
		t.Fatalf("sender report counts %d/%d for %d packets received", sr.PacketCount, sr.OctetCount, tap.audio.Len())
	}
	ntp := time.Unix(int64(sr.NTPTime>>32)-2208988800, 0)
	if d := time.Since(ntp); d < -2*time.Second || d > 5*time.Second {
		t.Fatalf("sender report NTP time %v is not the publisher's clock", ntp)
	}

	waitFor(t, "all audio", 5*time.Second, func() bool { return tap.audio.Len() >= len(frames) })
	got := tap.audio.Ordered()
	for i, f := range frames {
		if !bytes.Equal(got[i].Payload, f) {
			t.Fatalf("audio packet %d differs", i)
		}
		if i > 0 && got[i].Timestamp-got[i-1].Timestamp != 960 {
			t.Fatalf("audio timestamp step %d at %d", got[i].Timestamp-got[i-1].Timestamp, i)
		}
	}
	return srv
}

// A viewer's NACK is answered from the track's shared ring.
func TestNACKRetransmitsFromSharedRing(t *testing.T) {
	eachSendPath(t, testNACKRetransmitsFromSharedRing)
}

// playKeepingCopies publishes 20 video frames to a viewer that keeps every
// copy of a packet it receives (SRTP replay protection off, unlike a
// browser) and returns once all frames arrived.
func playKeepingCopies(t *testing.T, o whiptest.Options) (*whiptest.Server, *viewerTap, *whipclient.Player) {
	srv := whiptest.Start(t, o)
	pub := publish(t, srv, "s", whipclient.WithoutAudio())
	se := whipclient.DefaultSettingEngine()
	se.DisableSRTPReplayProtection(true)
	tap := newTap()
	player := play(t, srv, "s", append(tap.options(), whipclient.WithSettingEngine(se))...)
	srv.WaitSinks(t, "s", media.KindVideo, 1)
	frames := whiptest.H264Frames(20, 30, 3)
	sendFrames(t, pub, frames, 5*time.Millisecond)
	waitFor(t, "frames", 5*time.Second, func() bool { f, _ := tap.video.H264Frames(); return len(f) == len(frames) })
	return srv, tap, player
}

func testNACKRetransmitsFromSharedRing(t *testing.T, o whiptest.Options) *whiptest.Server {
	// The viewer must accept a second copy of a packet it already has.
	srv, tap, player := playKeepingCopies(t, o)

	pkts := tap.video.Ordered()
	target := pkts[len(pkts)/2]
	tooOld := pkts[0].SequenceNumber - 5 // sent before this viewer joined
	before := tap.video.Len()
	nack := &rtcp.TransportLayerNack{MediaSSRC: target.SSRC, Nacks: []rtcp.NackPair{
		{PacketID: target.SequenceNumber}, {PacketID: tooOld},
	}}
	if err := player.PeerConnection().WriteRTCP([]rtcp.Packet{nack}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "retransmission", 5*time.Second, func() bool { return tap.video.Len() > before })
	time.Sleep(100 * time.Millisecond)
	arrivals := tap.video.Packets()
	if len(arrivals) != before+1 {
		t.Fatalf("got %d extra packets, want exactly the one NACKed", len(arrivals)-before)
	}
	rtx := arrivals[len(arrivals)-1]
	if rtx.SequenceNumber != target.SequenceNumber || rtx.SSRC != target.SSRC || rtx.Timestamp != target.Timestamp ||
		!bytes.Equal(rtx.Payload, target.Payload) {
		t.Fatalf("retransmitted %d/%x, want a copy of %d/%x", rtx.SequenceNumber, rtx.SSRC, target.SequenceNumber, target.SSRC)
	}
	if n := metricValue(t, srv.EdgeMetrics, "backchannel_whep_nack_retransmissions_total"); n != 1 {
		t.Fatalf("NACK metric = %v", n)
	}
	if metricValue(t, srv.EdgeMetrics, "backchannel_whep_packets_sent_total") < float64(len(pkts)) ||
		metricValue(t, srv.EdgeMetrics, "backchannel_whep_bytes_sent_total") < 1000 {
		t.Fatal("sent counters not counting")
	}
	return srv
}

// A viewer's first video packet goes out a second time 40 ms
// later: the one loss no NACK can report (nothing precedes it), and one
// that makes the whole first GOP undecodable.
func TestFirstPacketSentTwice(t *testing.T) {
	eachSendPath(t, testFirstPacketSentTwice)
}

func testFirstPacketSentTwice(t *testing.T, o whiptest.Options) *whiptest.Server {
	srv, tap, _ := playKeepingCopies(t, o)
	time.Sleep(100 * time.Millisecond) // past the resend (40 ms after the first packet)
	arrivals := tap.video.Packets()
	first := tap.video.Ordered()[0]
	var copies []rtp.Packet
	for _, p := range arrivals {
		if p.SequenceNumber == first.SequenceNumber {
			copies = append(copies, p)
		}
	}
	if len(copies) != 2 {
		t.Fatalf("the first packet (seq %d) arrived %d times, want twice", first.SequenceNumber, len(copies))
	}
	if c := copies[1]; c.Timestamp != first.Timestamp || c.SSRC != first.SSRC || c.PayloadType != first.PayloadType || !bytes.Equal(c.Payload, first.Payload) {
		t.Fatalf("the second copy differs: %v / %v", c.Header, first.Header)
	}
	if extra := len(arrivals) - len(tap.video.Ordered()); extra != 1 {
		t.Fatalf("%d duplicate packets, want only the first packet's copy", extra)
	}
	return srv
}

// Without a GOP cache to start from, a joining viewer makes the edge ask
// the publisher for a keyframe; many joining at once do not cause a PLI
// storm.
func TestViewerJoinRequestsKeyframeRateLimited(t *testing.T) {
	srv := whiptest.Start(t, whiptest.Options{})
	srv.Registry.SetFastStart(media.FastStart{Disabled: true})
	var plis atomic.Int32
	pub := publish(t, srv, "s", whipclient.WithoutAudio(), whipclient.OnKeyframeRequest(func() { plis.Add(1) }))
	// One keyframe so the ingest knows the publisher's SSRC, then deltas only.
	frames := whiptest.H264Frames(31, 30, 4)
	sendFrames(t, pub, frames[:30], 5*time.Millisecond)
	time.Sleep(600 * time.Millisecond)
	if n := plis.Load(); n != 0 {
		t.Fatalf("%d PLIs before any viewer", n)
	}

	play(t, srv, "s")
	waitFor(t, "a PLI for the first viewer", 3*time.Second, func() bool { return plis.Load() == 1 })
	time.Sleep(media.KeyframeRequestInterval + 100*time.Millisecond)

	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			play(t, srv, "s")
		}()
	}
	wg.Wait()
	srv.WaitSinks(t, "s", media.KindVideo, 9)
	time.Sleep(2*media.KeyframeRequestInterval + 200*time.Millisecond)
	if n := plis.Load(); n < 2 || n > 3 {
		t.Fatalf("8 joining viewers caused %d PLIs in total, want 1-2 more than the first viewer's", n)
	}
	if n := metricValue(t, srv.IngestMetrics, "backchannel_whip_keyframe_requests_total"); int32(n) != plis.Load() {
		t.Fatalf("ingest PLI metric %v, publisher saw %d", n, plis.Load())
	}

	// A viewer's own PLI goes upstream too (rate-limited the same way).
	before := plis.Load()
	players := srv.Edge.Viewers()
	if players != 9 {
		t.Fatalf("Viewers() = %d", players)
	}
	p := play(t, srv, "s")
	srv.WaitSinks(t, "s", media.KindVideo, 10)
	time.Sleep(media.KeyframeRequestInterval + 100*time.Millisecond)
	before = plis.Load()
	tracks := p.PeerConnection().GetTransceivers()
	var ssrc uint32
	for _, tr := range tracks {
		if tr.Kind() == webrtc.RTPCodecTypeVideo {
			ssrc = uint32(tr.Receiver().Track().SSRC())
		}
	}
	if ssrc == 0 {
		t.Fatal("viewer does not know its video SSRC")
	}
	_ = p.PeerConnection().WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: ssrc}})
	waitFor(t, "viewer PLI forwarded", 3*time.Second, func() bool { return plis.Load() > before })
}
