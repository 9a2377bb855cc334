package edge_test

import (
	"bytes"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtcp"

	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/whipclient"
	"github.com/backchannel/backchannel/internal/whipclient/whiptest"
)

// A viewer joining mid-GOP, with a publisher that sends one keyframe and
// never another, gets the GOP from that keyframe at once, without a
// keyframe request, then the live frames: every frame, byte for byte. The
// replayed frames carry timestamps compressed towards the live point
// (the viewer must not play seconds behind), increasing, meeting the live
// ones; a NACK for a replayed packet is answered with the viewer's own
// timestamp for it.
func TestViewerStartsFromGOPCache(t *testing.T) {
	srv := whiptest.Start(t, whiptest.Options{})
	var plis atomic.Int32
	pub := publish(t, srv, "s", whipclient.WithoutAudio(), whipclient.OnKeyframeRequest(func() { plis.Add(1) }))
	frames := whiptest.H264Frames(120, 1000, 11)
	sendFrames(t, pub, frames[:60], 3*time.Millisecond) // two seconds of media, one keyframe

	se := whipclient.DefaultSettingEngine()
	se.DisableSRTPReplayProtection(true) // the retransmission below repeats a packet
	tap := newTap()
	player := play(t, srv, "s", append(tap.options(), whipclient.WithSettingEngine(se))...)
	waitFor(t, "the replayed GOP", 5*time.Second, func() bool { f, _ := tap.video.H264Frames(); return len(f) >= 60 })
	sendFrames(t, pub, frames[60:], 3*time.Millisecond)
	waitFor(t, "every frame", 5*time.Second, func() bool { f, _ := tap.video.H264Frames(); return len(f) == len(frames) })
	got, _ := tap.video.H264Frames()
	if err := whiptest.EqualFrames(frames, got); err != nil {
		t.Fatal(err)
	}
	if n := plis.Load(); n != 0 {
		t.Fatalf("%d keyframe requests reached the publisher", n)
	}
	if n := metricValue(t, srv.EdgeMetrics, "backchannel_whep_fast_starts_total"); n != 1 {
		t.Fatalf("fast start metric %v", n)
	}

	pkts := tap.video.Ordered()
	var stamps []uint32 // one per frame
	for i, p := range pkts {
		if i == 0 || p.Timestamp != pkts[i-1].Timestamp {
			stamps = append(stamps, p.Timestamp)
		}
	}
	if len(stamps) != len(frames) {
		t.Fatalf("%d distinct timestamps for %d frames", len(stamps), len(frames))
	}
	for i := 1; i < len(stamps); i++ {
		if int32(stamps[i]-stamps[i-1]) <= 0 {
			t.Fatalf("timestamp of frame %d does not increase", i)
		}
	}
	// The publisher spaces frames 3000 ticks apart (30 fps): the 60
	// replayed ones span two seconds of media, but are stamped within a
	// few milliseconds of the live point.
	if span := stamps[59] - stamps[0]; span > 90*10 {
		t.Fatalf("the replayed frames span %d ticks, want them compressed", span)
	}
	for i := 61; i < len(stamps); i++ {
		if stamps[i]-stamps[i-1] != 3000 {
			t.Fatalf("live frame %d is %d ticks after the previous one", i, stamps[i]-stamps[i-1])
		}
	}

	target := pkts[5] // a replayed packet, still in the shared ring
	before := tap.video.Len()
	nack := &rtcp.TransportLayerNack{MediaSSRC: target.SSRC, Nacks: []rtcp.NackPair{{PacketID: target.SequenceNumber}}}
	if err := player.PeerConnection().WriteRTCP([]rtcp.Packet{nack}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "retransmission", 5*time.Second, func() bool { return tap.video.Len() > before })
	arrivals := tap.video.Packets()
	rtx := arrivals[len(arrivals)-1]
	if rtx.SequenceNumber != target.SequenceNumber || rtx.Timestamp != target.Timestamp || !bytes.Equal(rtx.Payload, target.Payload) {
		t.Fatalf("retransmitted seq %d ts %d, want seq %d with its replayed ts %d", rtx.SequenceNumber, rtx.Timestamp, target.SequenceNumber, target.Timestamp)
	}
	srv.WaitSinks(t, "s", media.KindVideo, 1)
}
