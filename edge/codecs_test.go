package edge

import (
	"testing"

	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/rtc"
)

func oc(pt uint8, mime, fmtp string) rtc.OfferCodec {
	clock := uint32(90000)
	if mime == "audio/opus" {
		clock = 48000
	}
	return rtc.OfferCodec{PayloadType: pt, Codec: media.Codec{MimeType: mime, ClockRate: clock, Fmtp: fmtp}}
}

func TestMatchCodecPrefersSameProfile(t *testing.T) {
	chrome := rtc.OfferMedia{Kind: "video", Direction: "recvonly", Codecs: []rtc.OfferCodec{
		oc(96, "video/VP8", ""),
		oc(102, "video/H264", "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f"),
		oc(104, "video/H264", "level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f"),
		oc(106, "video/H264", "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"),
		oc(39, "video/H264", "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640034"),
	}}
	cases := []struct {
		stream media.Codec
		want   uint8
	}{
		{media.Codec{MimeType: media.MimeH264, ClockRate: 90000, Fmtp: "packetization-mode=1;profile-level-id=42e01f"}, 106},
		{media.Codec{MimeType: media.MimeH264, ClockRate: 90000, Fmtp: "packetization-mode=1;profile-level-id=42001e"}, 102},
		{media.Codec{MimeType: media.MimeH264, ClockRate: 90000, Fmtp: "packetization-mode=1;profile-level-id=640c1f"}, 39},
		{media.Codec{MimeType: media.MimeH264, ClockRate: 90000, Fmtp: "packetization-mode=1;profile-level-id=4d001f"}, 102},
		{media.Codec{MimeType: media.MimeVP8, ClockRate: 90000}, 96},
	}
	for _, c := range cases {
		got, ok := matchCodec(chrome, c.stream)
		if !ok || got.PayloadType != c.want {
			t.Errorf("stream %s %s: matched %d (%v), want %d", c.stream.MimeType, c.stream.Fmtp, got.PayloadType, ok, c.want)
		}
	}
	mode0 := media.Codec{MimeType: media.MimeH264, ClockRate: 90000, Fmtp: "profile-level-id=42e01f"}
	if got, _ := matchCodec(chrome, mode0); got.PayloadType != 104 {
		t.Errorf("mode 0 stream matched %d", got.PayloadType)
	}
	if _, ok := matchCodec(rtc.OfferMedia{Codecs: []rtc.OfferCodec{oc(98, "video/VP9", "")}}, cases[0].stream); ok {
		t.Error("VP9-only viewer matched an H.264 stream")
	}
}

func FuzzMatchCodec(f *testing.F) {
	f.Add("video/H264", "packetization-mode=1;profile-level-id=42e01f", "video/H264", "profile-level-id=4;packetization-mode=1")
	f.Add("audio/opus", "", "audio/OPUS", "x")
	f.Fuzz(func(t *testing.T, streamMime, streamFmtp, offerMime, offerFmtp string) {
		stream := media.Codec{MimeType: streamMime, ClockRate: 90000, Fmtp: streamFmtp}
		m := rtc.OfferMedia{Codecs: []rtc.OfferCodec{{PayloadType: 100, Codec: media.Codec{MimeType: offerMime, ClockRate: 90000, Fmtp: offerFmtp}}}}
		got, ok := matchCodec(m, stream)
		if !ok {
			return
		}
		if !got.Codec.Compatible(stream) && !stream.Is(media.MimeH264) {
			t.Fatalf("matched incompatible %+v for %+v", got, stream)
		}
		if stream.Is(media.MimeH264) && media.FmtpParam(got.Fmtp, "packetization-mode", "0") != media.FmtpParam(streamFmtp, "packetization-mode", "0") {
			t.Fatalf("packetization mode mismatch: %q vs %q", got.Fmtp, streamFmtp)
		}
	})
}
