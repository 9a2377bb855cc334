package edge

import (
	"strings"
	"testing"

	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/rtc"
)

type nopSource struct{}

func (nopSource) RequestKeyframe(media.Kind) {}
func (nopSource) Close() error               { return nil }

// A WHEP viewer whose offer takes H.265 still gets no H.265 (nor AAC):
// those tracks are for HLS; the rest of the stream plays.
func TestPlanViewerSkipsCodecsWebRTCCannotPlay(t *testing.T) {
	offer := &rtc.Offer{Media: []rtc.OfferMedia{
		{Kind: "video", Mid: "0", Direction: "recvonly", Codecs: []rtc.OfferCodec{oc(116, "video/H265", ""), oc(96, "video/VP8", "")}},
		{Kind: "audio", Mid: "1", Direction: "recvonly", Codecs: []rtc.OfferCodec{oc(111, "audio/opus", "")}},
	}}
	publish := func(name string, codecs ...media.Codec) []*media.Track {
		reg := media.NewRegistry("n")
		pub, err := reg.Publish(name, media.PublisherInfo{}, codecs, nopSource{})
		if err != nil {
			t.Fatal(err)
		}
		return pub.Stream().Tracks()
	}
	h265 := media.Codec{MimeType: media.MimeH265, ClockRate: 90000}
	opus := media.Codec{MimeType: media.MimeOpus, ClockRate: 48000, Channels: 2}
	aac := media.Codec{MimeType: media.MimeAAC, ClockRate: 48000, Channels: 2, Fmtp: "mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3;config=1190"}

	plans, err := planViewer(offer, publish("a", h265, opus), false)
	if err != nil || len(plans) != 1 || plans[0].track.Kind() != media.KindAudio {
		t.Fatalf("H.265 + Opus: %d plans, %v", len(plans), err)
	}
	_, err = planViewer(offer, publish("b", h265, aac), false)
	if err == nil || !strings.Contains(err.Error(), "WebRTC cannot play") {
		t.Fatalf("H.265 + AAC: %v", err)
	}

	// A relay (another edge) gets both, AAC with the channel count the
	// stream has when it offers several.
	relayOffer := &rtc.Offer{Media: []rtc.OfferMedia{
		{Kind: "video", Mid: "0", Direction: "recvonly", Codecs: []rtc.OfferCodec{oc(96, "video/H264", "packetization-mode=1"), oc(98, "video/H265", "")}},
		{Kind: "audio", Mid: "1", Direction: "recvonly", Codecs: []rtc.OfferCodec{oc(111, "audio/opus", ""),
			{PayloadType: 100, Codec: media.Codec{MimeType: "audio/MPEG4-GENERIC", ClockRate: 48000, Channels: 1}},
			{PayloadType: 101, Codec: media.Codec{MimeType: "audio/MPEG4-GENERIC", ClockRate: 48000, Channels: 2}}}},
	}}
	plans, err = planViewer(relayOffer, publish("c", h265, aac), true)
	if err != nil || len(plans) != 2 || plans[0].codec.PayloadType != 98 || plans[1].codec.PayloadType != 101 {
		t.Fatalf("relay of H.265 + AAC: %+v, %v", plans, err)
	}
}
