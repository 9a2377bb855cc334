package ingest

import (
	"fmt"
	"strings"

	"github.com/pion/webrtc/v4"

	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/rtc"
)

// h264Profiles are the H.264 profile_idc+constraint bytes (the first four
// hex digits of profile-level-id) accepted from publishers, in order of
// preference: constrained baseline first (every decoder, hardware included,
// takes it), then baseline, main and the high profiles browsers and OBS
// offer. The level is not negotiated (RFC 6184 §8.2.2).
var h264Profiles = []string{"42e0", "4200", "42c0", "4d00", "4d40", "640c", "6400", "6440"}

// chooseCodec picks the codec a publisher's media section will use: for
// video H.264 in packetization mode 1 (LL-HLS and every browser can take
// it) before VP8, for audio Opus. ok is false when nothing offered fits.
func chooseCodec(m rtc.OfferMedia) (rtc.OfferCodec, bool) {
	switch m.Kind {
	case "video":
		for _, prefix := range h264Profiles {
			for _, c := range m.Codecs {
				if c.Is(media.MimeH264) && c.ClockRate == 90000 &&
					media.FmtpParam(c.Fmtp, "packetization-mode", "0") == "1" &&
					strings.HasPrefix(strings.ToLower(media.FmtpParam(c.Fmtp, "profile-level-id", "42001f")), prefix) {
					return c, true
				}
			}
		}
		for _, c := range m.Codecs {
			if c.Is(media.MimeVP8) && c.ClockRate == 90000 {
				return c, true
			}
		}
	case "audio":
		for _, c := range m.Codecs {
			if c.Is(media.MimeOpus) && c.ClockRate == 48000 {
				return c, true
			}
		}
	}
	return rtc.OfferCodec{}, false
}

// publishPlan is what a WHIP offer asks to publish.
type publishPlan struct {
	video, audio *rtc.OfferCodec
}

func (p publishPlan) codecs() []media.Codec {
	var out []media.Codec
	for _, c := range []*rtc.OfferCodec{p.video, p.audio} {
		if c != nil {
			mc := c.Codec
			if mc.Is(media.MimeOpus) && mc.Channels == 0 {
				mc.Channels = 2
			}
			out = append(out, mc)
		}
	}
	return out
}

// planPublish checks a WHIP offer: at most one sending audio and one sending
// video section, each with a codec we take, and no simulcast.
func planPublish(o *rtc.Offer) (publishPlan, error) {
	var plan publishPlan
	for _, m := range o.Media {
		if m.Kind != "audio" && m.Kind != "video" || !m.Sends() {
			continue
		}
		if m.Simulcast {
			return plan, fmt.Errorf("simulcast publishing is not supported; send one %s encoding", m.Kind)
		}
		c, ok := chooseCodec(m)
		if !ok {
			return plan, fmt.Errorf("no supported %s codec offered (supported: %s; offered: %s)",
				m.Kind, supportedList(m.Kind), offeredList(m))
		}
		slot := &plan.video
		if m.Kind == "audio" {
			slot = &plan.audio
		}
		if *slot != nil {
			return plan, fmt.Errorf("more than one %s section; send one audio and one video track at most", m.Kind)
		}
		*slot = &c
	}
	if plan.video == nil && plan.audio == nil {
		return plan, fmt.Errorf("no usable media: the offer must send audio (Opus) and/or video (H.264 or VP8)")
	}
	return plan, nil
}

func supportedList(kind string) string {
	if kind == "audio" {
		return "Opus"
	}
	return "H.264 packetization-mode=1, VP8"
}

func offeredList(m rtc.OfferMedia) string {
	seen := map[string]bool{}
	var names []string
	for _, c := range m.Codecs {
		n := strings.TrimPrefix(strings.TrimPrefix(c.MimeType, "video/"), "audio/")
		if !seen[strings.ToLower(n)] {
			seen[strings.ToLower(n)] = true
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// publisherFeedback is the RTCP feedback we ask publishers for: NACK-based
// retransmission, keyframe requests and transport-wide congestion control
// so browsers ramp their bitrate.
var publisherFeedback = []webrtc.RTCPFeedback{
	{Type: "nack"},
	{Type: "nack", Parameter: "pli"},
	{Type: "ccm", Parameter: "fir"},
	{Type: "transport-cc"},
}

// codecParameters turns an offered codec into the one we register, keeping
// the publisher's payload type so the answer echoes it.
func codecParameters(c rtc.OfferCodec, kind webrtc.RTPCodecType) webrtc.RTPCodecParameters {
	fb := publisherFeedback
	if kind == webrtc.RTPCodecTypeAudio {
		fb = []webrtc.RTCPFeedback{{Type: "transport-cc"}}
	}
	return webrtc.RTPCodecParameters{
		RTPCodecCapability: webrtc.RTPCodecCapability{
			MimeType:     c.MimeType,
			ClockRate:    c.ClockRate,
			Channels:     c.Channels,
			SDPFmtpLine:  c.Fmtp,
			RTCPFeedback: fb,
		},
		PayloadType: webrtc.PayloadType(c.PayloadType),
	}
}
