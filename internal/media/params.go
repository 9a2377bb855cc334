package media

import (
	"bytes"
	"strings"

	"github.com/backchannel/backchannel/internal/codec/aac"
	avc "github.com/backchannel/backchannel/internal/codec/h264"
	hevc "github.com/backchannel/backchannel/internal/codec/h265"
)

// ParameterSets are the decoder parameter sets of a video track: SPS and
// PPS for H.264, plus the VPS for H.265. They start as the publisher's SDP
// gave them (sprop-parameter-sets, sprop-vps/sps/pps) and follow the ones
// seen in band, so a stream published over WebRTC, which carries them only
// in band, can still be described to an RTSP reader.
type ParameterSets struct {
	VPS, SPS, PPS []byte
}

// VideoFormat is what a video track's sequence parameter set says.
type VideoFormat struct {
	Width, Height int
	FrameRate     float64 // from the VUI timing; 0 when not declared
}

// maxParameterSetSize bounds a parameter set kept from the packet stream;
// real ones are tens of bytes.
const maxParameterSetSize = 1024

// paramWatcher follows the parameter sets in a video track's packets. It
// runs on the write path, under the track's write lock, and only looks
// further than the first payload byte for packets that can hold them.
type paramWatcher struct {
	h264, h265 bool
	cur        ParameterSets
}

func newParamWatcher(c Codec) paramWatcher {
	w := paramWatcher{h264: c.Is(MimeH264), h265: c.Is(MimeH265)}
	switch {
	case w.h264:
		if f, err := avc.ParseFMTP(c.Fmtp); err == nil {
			w.cur.SPS, w.cur.PPS = clip(f.SPS), clip(f.PPS)
		}
	case w.h265:
		if f, err := hevc.ParseFMTP(c.Fmtp); err == nil {
			w.cur.VPS, w.cur.SPS, w.cur.PPS = clip(f.VPS), clip(f.SPS), clip(f.PPS)
		}
	}
	return w
}

func clip(b []byte) []byte {
	if len(b) > maxParameterSetSize {
		return nil
	}
	return b
}

// scan records the parameter sets a payload carries (single NAL units and
// aggregation packets; fragmented parameter sets are not followed) and
// reports whether the SPS or another set changed.
func (w *paramWatcher) scan(payload []byte) (changed, spsChanged bool) {
	if len(payload) == 0 {
		return false, false
	}
	switch {
	case w.h264:
		switch typ := payload[0] & 0x1f; typ {
		case h264NALSPS, h264NALPPS:
			return w.record(typ == h264NALSPS, typ == h264NALPPS, false, payload)
		case h264NALSTAPA:
			return w.scanAggregate(payload[1:], func(n []byte) (bool, bool, bool) {
				t := n[0] & 0x1f
				return t == h264NALSPS, t == h264NALPPS, false
			})
		}
	case w.h265:
		if len(payload) < 2 {
			return false, false
		}
		switch typ := payload[0] >> 1 & 0x3f; typ {
		case h265NALVPS, h265NALSPS, h265NALPPS:
			return w.record(typ == h265NALSPS, typ == h265NALPPS, typ == h265NALVPS, payload)
		case h265NALAP:
			return w.scanAggregate(payload[2:], func(n []byte) (bool, bool, bool) {
				t := n[0] >> 1 & 0x3f
				return t == h265NALSPS, t == h265NALPPS, t == h265NALVPS
			})
		}
	}
	return false, false
}

func (w *paramWatcher) scanAggregate(rest []byte, classify func([]byte) (sps, pps, vps bool)) (changed, spsChanged bool) {
	for len(rest) >= 2 {
		size := int(rest[0])<<8 | int(rest[1])
		rest = rest[2:]
		if size == 0 || size > len(rest) {
			break
		}
		n := rest[:size]
		sps, pps, vps := classify(n)
		c, s := w.record(sps, pps, vps, n)
		changed, spsChanged = changed || c, spsChanged || s
		rest = rest[size:]
	}
	return changed, spsChanged
}

func (w *paramWatcher) record(sps, pps, vps bool, nal []byte) (changed, spsChanged bool) {
	var dst *[]byte
	switch {
	case sps:
		dst = &w.cur.SPS
	case pps:
		dst = &w.cur.PPS
	case vps:
		dst = &w.cur.VPS
	default:
		return false, false
	}
	if len(nal) > maxParameterSetSize || bytes.Equal(*dst, nal) {
		return false, false
	}
	// A fresh copy: snapshots handed out by Track.ParameterSets share the
	// old slices and must never see them change.
	*dst = append([]byte(nil), nal...)
	return true, sps
}

// snapshot returns the current sets; the slices are never modified later.
func (w *paramWatcher) snapshot() *ParameterSets {
	c := w.cur
	return &c
}

// format parses the current SPS.
func (w *paramWatcher) format() *VideoFormat {
	if w.cur.SPS == nil {
		return nil
	}
	switch {
	case w.h264:
		s, err := avc.ParseSPS(w.cur.SPS)
		if err != nil {
			return nil
		}
		return &VideoFormat{Width: s.Width, Height: s.Height, FrameRate: s.FrameRate()}
	case w.h265:
		s, err := hevc.ParseSPS(w.cur.SPS)
		if err != nil {
			return nil
		}
		return &VideoFormat{Width: s.Width, Height: s.Height, FrameRate: s.FrameRate()}
	}
	return nil
}

// SampleRate is the audio sample rate of a codec: for AAC the output rate
// its AudioSpecificConfig declares (which the RTP clock may not match), for
// everything else the RTP clock rate. It is 0 for video.
func (c Codec) SampleRate() int {
	if c.Kind() != KindAudio {
		return 0
	}
	if c.Is(MimeAAC) {
		if f, err := aac.ParseFMTP(c.Fmtp); err == nil {
			if f.Config.ExtensionSampleRate > 0 {
				return f.Config.ExtensionSampleRate
			}
			if f.Config.SampleRate > 0 {
				return f.Config.SampleRate
			}
		}
	}
	return int(c.ClockRate)
}

// WithFmtpParam returns fmtp with key set to value (replacing it where
// present, appended otherwise); an empty value removes the key.
func WithFmtpParam(fmtp, key, value string) string {
	var parts []string
	found := false
	for part := range strings.SplitSeq(fmtp, ";") {
		p := strings.TrimSpace(part)
		if p == "" {
			continue
		}
		k, _, _ := strings.Cut(p, "=")
		if strings.EqualFold(strings.TrimSpace(k), key) {
			found = true
			if value != "" {
				parts = append(parts, key+"="+value)
			}
			continue
		}
		parts = append(parts, p)
	}
	if !found && value != "" {
		parts = append(parts, key+"="+value)
	}
	return strings.Join(parts, ";")
}
