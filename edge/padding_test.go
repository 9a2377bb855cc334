package edge_test

import (
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/whipclient"
	"github.com/backchannel/backchannel/internal/whipclient/whiptest"
)

// Padding-only packets (a publisher's bandwidth probes) reach viewers as
// valid RTP on both sending paths: the stream model keeps the padding size
// in the header, and the sender must write the padding back.
func TestPaddingOnlyPacketsReachViewers(t *testing.T) {
	eachSendPath(t, func(t *testing.T, o whiptest.Options) *whiptest.Server {
		srv := whiptest.Start(t, o)
		h264 := media.Codec{MimeType: media.MimeH264, ClockRate: 90000, Fmtp: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"}
		pub, err := srv.Registry.Publish("pad", media.PublisherInfo{Protocol: media.ProtocolWHIP}, []media.Codec{h264}, benchSource{})
		if err != nil {
			t.Fatal(err)
		}
		w, _ := pub.Track(media.KindVideo)
		seq, ts := uint16(100), uint32(9000)
		write := func(p *rtp.Packet) {
			p.Version, p.PayloadType, p.SSRC, p.SequenceNumber, p.Timestamp = 2, 102, 7, seq, ts
			seq++
			if err := w.WriteRTP(p); err != nil {
				t.Fatal(err)
			}
		}
		write(&rtp.Packet{Header: rtp.Header{Marker: true}, Payload: []byte{0x67, 0x42, 0xe0, 0x1f, 0xda}}) // an SPS: a decoder start
		tap := newTap()
		play(t, srv, "pad", append(tap.options(), whipclient.WithoutAudio())...)
		srv.WaitSinks(t, "pad", media.KindVideo, 1)
		ts += 3000
		write(&rtp.Packet{Header: rtp.Header{Marker: true}, Payload: []byte{0x65, 1, 2, 3}})
		for range 3 {
			write(&rtp.Packet{Header: rtp.Header{Padding: true, PaddingSize: 200}})
		}
		ts += 3000
		write(&rtp.Packet{Header: rtp.Header{Marker: true}, Payload: []byte{0x41, 4, 5, 6}})
		waitFor(t, "the packets after the padding", 5*time.Second, func() bool {
			pkts := tap.video.Ordered()
			return len(pkts) > 0 && len(pkts[len(pkts)-1].Payload) > 0 && pkts[len(pkts)-1].Payload[0] == 0x41 // the last may be padding until it arrives
		})
		pkts := tap.video.Ordered()
		for i := 1; i < len(pkts); i++ {
			if pkts[i].SequenceNumber != pkts[i-1].SequenceNumber+1 {
				t.Fatalf("sequence gap %d then %d: a padding packet was lost", pkts[i-1].SequenceNumber, pkts[i].SequenceNumber)
			}
		}
		pads := 0
		for _, p := range pkts {
			if p.Padding && len(p.Payload) == 0 {
				pads++
			}
		}
		if pads != 3 {
			t.Fatalf("%d padding-only packets arrived, want 3", pads)
		}
		return srv
	})
}
