package edge

import (
	"fmt"
	"strings"

	"github.com/pion/webrtc/v4"

	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/rtc"
)

// matchCodec finds the viewer's payload type for a stream codec in one
// offered media section. For H.264 the packetization mode must match; a
// profile match is preferred (exact profile_idc and constraints, then the
// same profile_idc) but any H.264 is taken, since browsers decode every
// profile in-band whatever was signalled.
func matchCodec(m rtc.OfferMedia, want media.Codec) (rtc.OfferCodec, bool) {
	var best rtc.OfferCodec
	bestScore := 0
	isH264 := want.Is(media.MimeH264)
	channels := func(n uint16) uint16 { return max(n, 1) }
	wantProfile := strings.ToLower(media.FmtpParam(want.Fmtp, "profile-level-id", "42001f"))
	for _, c := range m.Codecs {
		if !strings.EqualFold(c.MimeType, want.MimeType) || c.ClockRate != want.ClockRate {
			continue
		}
		score := 1
		if isH264 {
			if media.FmtpParam(c.Fmtp, "packetization-mode", "0") != media.FmtpParam(want.Fmtp, "packetization-mode", "0") {
				continue
			}
			p := strings.ToLower(media.FmtpParam(c.Fmtp, "profile-level-id", "42001f"))
			switch {
			case len(p) >= 4 && len(wantProfile) >= 4 && p[:4] == wantProfile[:4]:
				score = 3
			case len(p) >= 2 && len(wantProfile) >= 2 && p[:2] == wantProfile[:2]:
				score = 2
			}
		} else if want.Kind() == media.KindAudio && channels(c.Channels) == channels(want.Channels) {
			score = 2
		}
		if score > bestScore {
			best, bestScore = c, score
		}
	}
	return best, bestScore > 0
}

// viewerPlan pairs each stream track with the offered section and payload
// type that will carry it.
type viewerPlan struct {
	track *media.Track
	codec rtc.OfferCodec
	mid   string
}

// planViewer matches the stream's tracks with the offer. A relay (another
// edge) gets every track it can take; a viewer only those WebRTC plays.
func planViewer(o *rtc.Offer, tracks []*media.Track, relay bool) ([]viewerPlan, error) {
	var plans []viewerPlan
	used := map[int]bool{}
	for _, t := range tracks {
		want := t.Codec()
		if !want.PlayableOverWebRTC() && !relay {
			// H.265 and AAC (RTSP publishers) go to HLS: a viewer gets the
			// stream's other track, even if its browser offers H.265.
			continue
		}
		for i, m := range o.Media {
			if used[i] || m.Kind != string(t.Kind()) || !m.Receives() {
				continue
			}
			if c, ok := matchCodec(m, want); ok {
				used[i] = true
				plans = append(plans, viewerPlan{track: t, codec: c, mid: m.Mid})
				break
			}
		}
	}
	if len(plans) == 0 {
		var have, unplayable []string
		for _, t := range tracks {
			have = append(have, t.Codec().MimeType)
			if !t.Codec().PlayableOverWebRTC() {
				unplayable = append(unplayable, t.Codec().MimeType)
			}
		}
		if len(unplayable) == len(tracks) {
			return nil, fmt.Errorf("the stream carries %s, which WebRTC cannot play; play it over HLS or RTSP", strings.Join(unplayable, " + "))
		}
		return nil, fmt.Errorf("no common codec: the stream carries %s and the offer receives none of them", strings.Join(have, " + "))
	}
	return plans, nil
}

// viewerFeedback is what we answer on viewer sections: NACKs (served from
// the shared ring) and keyframe requests.
func viewerFeedback(kind media.Kind) []webrtc.RTCPFeedback {
	if kind != media.KindVideo {
		return nil
	}
	return []webrtc.RTCPFeedback{
		{Type: "nack"},
		{Type: "nack", Parameter: "pli"},
		{Type: "ccm", Parameter: "fir"},
	}
}
