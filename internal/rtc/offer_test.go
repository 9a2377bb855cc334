package rtc

import (
	"strings"
	"testing"
)

// A trimmed Chromium recvonly offer (WHEP viewer) with many codecs.
const chromeOffer = "v=0\r\n" +
	"o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n" +
	"s=-\r\n" +
	"t=0 0\r\n" +
	"a=group:BUNDLE 0 1\r\n" +
	"a=msid-semantic: WMS\r\n" +
	"m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\n" +
	"c=IN IP4 0.0.0.0\r\n" +
	"a=ice-ufrag:abcd\r\n" +
	"a=ice-pwd:abcdefghijklmnopqrstuvwx\r\n" +
	"a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n" +
	"a=setup:actpass\r\n" +
	"a=mid:0\r\n" +
	"a=recvonly\r\n" +
	"a=rtcp-mux\r\n" +
	"a=rtpmap:111 opus/48000/2\r\n" +
	"a=rtcp-fb:111 transport-cc\r\n" +
	"a=fmtp:111 minptime=10;useinbandfec=1\r\n" +
	"a=rtpmap:63 red/48000/2\r\n" +
	"a=fmtp:63 111/111\r\n" +
	"a=rtpmap:9 G722/8000\r\n" +
	"a=rtpmap:0 PCMU/8000\r\n" +
	"a=rtpmap:8 PCMA/8000\r\n" +
	"a=rtpmap:13 CN/8000\r\n" +
	"a=rtpmap:110 telephone-event/48000\r\n" +
	"a=rtpmap:126 telephone-event/8000\r\n" +
	"m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 104 105 106 107 108 109 127 125 39 40 45 46\r\n" +
	"c=IN IP4 0.0.0.0\r\n" +
	"a=mid:1\r\n" +
	"a=recvonly\r\n" +
	"a=rtpmap:96 VP8/90000\r\n" +
	"a=rtcp-fb:96 goog-remb\r\n" +
	"a=rtcp-fb:96 nack\r\n" +
	"a=rtcp-fb:96 nack pli\r\n" +
	"a=rtpmap:97 rtx/90000\r\n" +
	"a=fmtp:97 apt=96\r\n" +
	"a=rtpmap:102 H264/90000\r\n" +
	"a=rtcp-fb:102 nack pli\r\n" +
	"a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r\n" +
	"a=rtpmap:103 rtx/90000\r\n" +
	"a=fmtp:103 apt=102\r\n" +
	"a=rtpmap:104 H264/90000\r\n" +
	"a=fmtp:104 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f\r\n" +
	"a=rtpmap:105 rtx/90000\r\n" +
	"a=rtpmap:106 H264/90000\r\n" +
	"a=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n" +
	"a=rtpmap:107 rtx/90000\r\n" +
	"a=rtpmap:108 H264/90000\r\n" +
	"a=fmtp:108 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f\r\n" +
	"a=rtpmap:109 rtx/90000\r\n" +
	"a=rtpmap:127 H264/90000\r\n" +
	"a=fmtp:127 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f\r\n" +
	"a=rtpmap:125 rtx/90000\r\n" +
	"a=rtpmap:39 H264/90000\r\n" +
	"a=fmtp:39 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640034\r\n" +
	"a=rtpmap:40 rtx/90000\r\n" +
	"a=rtpmap:45 AV1/90000\r\n" +
	"a=rtpmap:46 rtx/90000\r\n"

func TestParseOfferChrome(t *testing.T) {
	o, err := ParseOffer(chromeOffer)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.Media) != 2 {
		t.Fatalf("%d media sections", len(o.Media))
	}
	a, v := o.Media[0], o.Media[1]
	if a.Kind != "audio" || a.Mid != "0" || a.Direction != "recvonly" || !a.Receives() || a.Sends() {
		t.Fatalf("audio section %+v", a)
	}
	if a.Codecs[0].PayloadType != 111 || !a.Codecs[0].Is("audio/opus") || a.Codecs[0].ClockRate != 48000 ||
		a.Codecs[0].Channels != 2 || a.Codecs[0].Fmtp != "minptime=10;useinbandfec=1" || a.Codecs[0].Feedback[0] != "transport-cc" {
		t.Fatalf("opus %+v", a.Codecs[0])
	}
	if len(a.Codecs) != 8 {
		t.Fatalf("%d audio codecs", len(a.Codecs))
	}
	var h264 []OfferCodec
	for _, c := range v.Codecs {
		if c.Is("video/H264") {
			h264 = append(h264, c)
		}
	}
	if len(h264) != 6 || h264[0].PayloadType != 102 || !strings.Contains(h264[2].Fmtp, "42e01f") {
		t.Fatalf("H264 codecs %+v", h264)
	}
	if len(v.Codecs) != 16 {
		t.Fatalf("%d video codecs", len(v.Codecs))
	}
}

func TestParseOfferDirectionsAndErrors(t *testing.T) {
	base := "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
	o, err := ParseOffer(base + "a=sendonly\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\nm=audio 0 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\na=sendrecv\r\n")
	if err != nil {
		t.Fatal(err)
	}
	if !o.Media[0].Sends() || o.Media[0].Direction != "sendonly" {
		t.Fatalf("session-level direction not inherited: %+v", o.Media[0])
	}
	if !o.Media[1].Rejected || o.Media[1].Sends() || o.Media[1].Receives() {
		t.Fatalf("port 0 section not rejected: %+v", o.Media[1])
	}
	o, err = ParseOffer(base + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\na=simulcast:send f;h\r\n")
	if err != nil || !o.Media[0].Simulcast || o.Media[0].Direction != "sendrecv" {
		t.Fatalf("simulcast/default direction: %+v %v", o, err)
	}
	for name, bad := range map[string]string{
		"empty":          "",
		"not sdp":        "hello",
		"no media":       base,
		"bad clock":      base + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/fast\r\n",
		"zero clock":     base + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/0\r\n",
		"bad channels":   base + "m=audio 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 opus/48000/x\r\n",
		"too many m=":    base + strings.Repeat("m=audio 9 UDP/TLS/RTP/SAVPF 96\r\n", 17),
		"too many PTs":   base + "m=video 9 UDP/TLS/RTP/SAVPF" + strings.Repeat(" 96", 65) + "\r\n",
		"rtpmap no name": base + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 /90000\r\n",
	} {
		if _, err := ParseOffer(bad); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// Unknown formats and attributes for other payload types are ignored.
	o, err = ParseOffer(base + "m=video 9 UDP/TLS/RTP/SAVPF 96 abc 300\r\na=rtpmap:96 VP8/90000\r\na=rtcp-fb:* nack\r\na=fmtp:97 x=1\r\n")
	if err != nil || len(o.Media[0].Codecs) != 1 {
		t.Fatalf("lenient parse: %+v %v", o, err)
	}
}

func FuzzParseOffer(f *testing.F) {
	f.Add(chromeOffer)
	f.Add("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 H264/90000/1/2\r\n")
	f.Add("v=0\r\nm=audio 0 RTP 0\r\n")
	f.Add("")
	f.Fuzz(func(t *testing.T, raw string) {
		o, err := ParseOffer(raw)
		if err != nil {
			return
		}
		if len(o.Media) == 0 || len(o.Media) > maxOfferMedia {
			t.Fatalf("accepted %d media sections", len(o.Media))
		}
		for _, m := range o.Media {
			for _, c := range m.Codecs {
				if c.ClockRate == 0 || c.MimeType == "" || c.PayloadType > 127 {
					t.Fatalf("accepted codec %+v", c)
				}
			}
		}
	})
}
