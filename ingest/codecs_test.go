package ingest

import (
	"strings"
	"testing"

	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/rtc"
)

func offerCodec(pt uint8, mime string, clock uint32, fmtp string) rtc.OfferCodec {
	return rtc.OfferCodec{PayloadType: pt, Codec: media.Codec{MimeType: mime, ClockRate: clock, Fmtp: fmtp}}
}

func TestChooseCodecPreferences(t *testing.T) {
	video := rtc.OfferMedia{Kind: "video", Direction: "sendonly", Codecs: []rtc.OfferCodec{
		offerCodec(96, "video/VP8", 90000, ""),
		offerCodec(98, "video/VP9", 90000, "profile-id=0"),
		offerCodec(100, "video/H264", 90000, "packetization-mode=0;profile-level-id=42e01f"),
		offerCodec(102, "video/H264", 90000, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640c1f"),
		offerCodec(104, "video/H264", 90000, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"),
	}}
	c, ok := chooseCodec(video)
	if !ok || c.PayloadType != 104 {
		t.Fatalf("chose %+v, want constrained baseline H.264 (104)", c)
	}
	video.Codecs = video.Codecs[:4]
	if c, _ := chooseCodec(video); c.PayloadType != 102 {
		t.Fatalf("chose %d, want the high profile H.264 (102)", c.PayloadType)
	}
	video.Codecs = video.Codecs[:3]
	if c, _ := chooseCodec(video); c.PayloadType != 96 {
		t.Fatalf("chose %d, want VP8 when only mode-0 H.264 is offered", c.PayloadType)
	}
	video.Codecs = video.Codecs[1:3]
	if _, ok := chooseCodec(video); ok {
		t.Fatal("VP9 and mode-0 H.264 accepted")
	}
	audio := rtc.OfferMedia{Kind: "audio", Codecs: []rtc.OfferCodec{offerCodec(0, "audio/PCMU", 8000, ""), offerCodec(111, "audio/opus", 48000, "")}}
	if c, ok := chooseCodec(audio); !ok || c.PayloadType != 111 {
		t.Fatalf("audio chose %+v", c)
	}
}

func TestPlanPublish(t *testing.T) {
	h264 := offerCodec(102, "video/H264", 90000, "packetization-mode=1;profile-level-id=42e01f")
	opus := offerCodec(111, "audio/opus", 48000, "minptime=10")
	plan, err := planPublish(&rtc.Offer{Media: []rtc.OfferMedia{
		{Kind: "audio", Direction: "sendonly", Codecs: []rtc.OfferCodec{opus}},
		{Kind: "video", Direction: "recvonly", Codecs: []rtc.OfferCodec{h264}}, // ignored: not sending
		{Kind: "video", Direction: "sendrecv", Codecs: []rtc.OfferCodec{h264}},
		{Kind: "application", Direction: "sendrecv"},
	}})
	if err != nil || plan.video == nil || plan.audio == nil {
		t.Fatalf("plan %+v, %v", plan, err)
	}
	codecs := plan.codecs()
	if len(codecs) != 2 || codecs[1].Channels != 2 {
		t.Fatalf("codecs %+v (Opus must be 2 channels)", codecs)
	}
	for name, o := range map[string]*rtc.Offer{
		"nothing sent": {Media: []rtc.OfferMedia{{Kind: "video", Direction: "recvonly", Codecs: []rtc.OfferCodec{h264}}}},
		"simulcast":    {Media: []rtc.OfferMedia{{Kind: "video", Direction: "sendonly", Simulcast: true, Codecs: []rtc.OfferCodec{h264}}}},
		"two audio": {Media: []rtc.OfferMedia{
			{Kind: "audio", Direction: "sendonly", Codecs: []rtc.OfferCodec{opus}},
			{Kind: "audio", Direction: "sendonly", Codecs: []rtc.OfferCodec{opus}}}},
		"unsupported": {Media: []rtc.OfferMedia{{Kind: "audio", Direction: "sendonly", Codecs: []rtc.OfferCodec{offerCodec(0, "audio/PCMU", 8000, "")}}}},
	} {
		_, err := planPublish(o)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if name == "unsupported" && !strings.Contains(err.Error(), "PCMU") {
			t.Errorf("error does not say what was offered: %v", err)
		}
	}
}

func FuzzPlanPublish(f *testing.F) {
	f.Add("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\na=sendonly\r\na=rtpmap:102 H264/90000\r\na=fmtp:102 packetization-mode=1;profile-level-id=42e01f\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendonly\r\na=rtpmap:111 opus/48000/2\r\n")
	f.Add("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\na=simulcast:send a;b\r\n")
	f.Fuzz(func(t *testing.T, raw string) {
		o, err := rtc.ParseOffer(raw)
		if err != nil {
			return
		}
		plan, err := planPublish(o)
		if err != nil {
			return
		}
		for _, c := range plan.codecs() {
			ok := c.Is(media.MimeH264) && media.FmtpParam(c.Fmtp, "packetization-mode", "0") == "1" ||
				c.Is(media.MimeVP8) || c.Is(media.MimeOpus) && c.Channels == 2
			if !ok || c.Kind() == "" {
				t.Fatalf("planned unsupported codec %+v", c)
			}
		}
	})
}
