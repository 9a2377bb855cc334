package cmaf

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/pion/rtp"

	"github.com/backchannel/backchannel/internal/codec/aac"
	"github.com/backchannel/backchannel/internal/codec/h264"
	"github.com/backchannel/backchannel/internal/codec/h265"
	"github.com/backchannel/backchannel/internal/codec/opus"
	"github.com/backchannel/backchannel/internal/fmp4"
	"github.com/backchannel/backchannel/internal/media"
)

// errLoss marks access units dropped for RTP packet loss.
var errLoss = errors.New("cmaf: packet loss")

// unit is one access unit with timestamps in the track's clock, extended
// to 64 bits, before the track's timeline offset.
type unit struct {
	nalus    [][]byte // video
	data     []byte   // audio
	pts, dts int64
	duration uint32 // audio
	key      bool
}

type codecKind int

const (
	kindH264 codecKind = iota
	kindH265
	kindOpus
	kindAAC
)

// track turns one media track's packets into access units.
type track struct {
	media *media.Track
	idx   int
	id    uint32 // fMP4 track_ID
	video bool
	clock uint32
	kind  codecKind

	h264d  h264.Depacketizer
	h264x  h264.DTSExtractor
	h265d  h265.Depacketizer
	h265x  h265.DTSExtractor
	params paramSets

	aacd     *aac.Depacketizer
	aacConf  []byte
	channels int
	opusTS   unwrapper

	seqShift uint16 // padding-only packets skipped so far

	based   bool
	base    int64 // added to the track's timestamps to place them on the timeline
	written bool  // a sample went into the current muxer
	lastDTS int64

	out []unit
}

func newTrack(mt *media.Track, idx int) (*track, error) {
	c := mt.Codec()
	t := &track{media: mt, idx: idx, id: uint32(idx + 1), clock: c.ClockRate}
	if t.clock == 0 {
		return nil, errors.New("no clock rate")
	}
	switch {
	case c.Is(MimeH264):
		f, err := h264.ParseFMTP(c.Fmtp)
		if err != nil {
			return nil, err
		}
		if f.PacketizationMode == 2 {
			return nil, errors.New("interleaved packetization is not supported")
		}
		t.kind, t.video = kindH264, true
		t.params.kind = kindH264
		if f.SPS != nil && f.PPS != nil {
			t.params.update([][]byte{f.SPS, f.PPS})
			if sps, err := h264.ParseSPS(f.SPS); err == nil {
				t.h264x.UseSPS(sps)
			}
		}
	case c.Is(MimeH265):
		f, err := h265.ParseFMTP(c.Fmtp)
		if err != nil {
			return nil, err
		}
		if f.MaxDONDiff > 0 {
			return nil, errors.New("decoding order numbers (sprop-max-don-diff) are not supported")
		}
		t.kind, t.video = kindH265, true
		t.params.kind = kindH265
		if f.VPS != nil && f.SPS != nil && f.PPS != nil {
			t.params.update([][]byte{f.VPS, f.SPS, f.PPS})
			if sps, err := h265.ParseSPS(f.SPS); err == nil {
				t.h265x.UseSPS(sps)
			}
		}
	case c.Is(MimeOpus):
		t.kind = kindOpus
		t.channels = int(c.Channels)
		if t.channels == 0 {
			t.channels = 2
		}
		if _, err := opus.NewHead(t.channels); err != nil {
			return nil, err
		}
	case c.Is(MimeAAC):
		f, err := aac.ParseFMTP(c.Fmtp)
		if err != nil {
			return nil, err
		}
		t.kind = kindAAC
		t.aacd = aac.NewDepacketizer(f)
		t.aacConf = f.ConfigBytes
	default:
		return nil, errors.New("codec not supported in fMP4 here")
	}
	return t, nil
}

// push depacketizes one packet. The units returned are valid until the
// next call.
func (t *track) push(p *rtp.Packet) ([]unit, error) {
	t.out = t.out[:0]
	var errs []error
	switch t.kind {
	case kindH264:
		aus, err := t.h264d.Push(p)
		if err != nil {
			errs = append(errs, lossOr(err, h264.ErrPacketLoss))
		}
		for _, au := range aus {
			dts, err := t.h264x.Extract(au.NALUs, au.PTS)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			t.out = append(t.out, unit{nalus: au.NALUs, pts: au.PTS, dts: dts, key: h264.IsKeyframe(au.NALUs)})
		}
	case kindH265:
		aus, err := t.h265d.Push(p)
		if err != nil {
			errs = append(errs, lossOr(err, h265.ErrPacketLoss))
		}
		for _, au := range aus {
			dts, err := t.h265x.Extract(au.NALUs, au.PTS)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			t.out = append(t.out, unit{nalus: au.NALUs, pts: au.PTS, dts: dts, key: h265.IsKeyframe(au.NALUs)})
		}
	case kindOpus:
		if len(p.Payload) == 0 {
			return nil, nil
		}
		n, err := opus.PacketDuration(p.Payload)
		if err != nil {
			return nil, err
		}
		ts := t.opusTS.extend(p.Timestamp)
		t.out = append(t.out, unit{data: p.Payload, pts: ts, dts: ts, duration: uint32(n), key: true})
	case kindAAC:
		aus, err := t.aacd.Push(p)
		if err != nil {
			errs = append(errs, lossOr(err, aac.ErrPacketLoss))
		}
		for _, au := range aus {
			t.out = append(t.out, unit{data: au.Data, pts: au.PTS, dts: au.PTS, duration: uint32(t.aacd.SamplesPerAU), key: true})
		}
	}
	return t.out, errors.Join(errs...)
}

func lossOr(err, loss error) error {
	if errors.Is(err, loss) {
		return fmt.Errorf("%w: %w", errLoss, err)
	}
	return err
}

// fmp4Codec describes the track for an init segment.
func (t *track) fmp4Codec() (fmp4.Codec, error) {
	switch t.kind {
	case kindH264, kindH265:
		return t.params.codec()
	case kindOpus:
		h, err := opus.NewHead(t.channels)
		if err != nil {
			return nil, err
		}
		return &fmp4.Opus{Head: h}, nil
	case kindAAC:
		return &fmp4.AAC{Config: t.aacConf}, nil
	}
	return nil, errors.New("cmaf: unknown codec")
}

// paramSets are a video track's current parameter sets.
type paramSets struct {
	kind          codecKind
	vps, sps, pps []byte
}

// update takes the parameter sets found in nalus and reports whether any
// differs from what the current init segment was built with.
func (p *paramSets) update(nalus [][]byte) bool {
	changed := false
	set := func(dst *[]byte, n []byte) {
		if !bytes.Equal(*dst, n) {
			*dst = append([]byte(nil), n...)
			changed = true
		}
	}
	for _, n := range nalus {
		switch p.kind {
		case kindH264:
			switch h264.TypeOf(n) {
			case h264.NALUTypeSPS:
				set(&p.sps, n)
			case h264.NALUTypePPS:
				set(&p.pps, n)
			}
		case kindH265:
			switch h265.TypeOf(n) {
			case h265.NALUTypeVPS:
				set(&p.vps, n)
			case h265.NALUTypeSPS:
				set(&p.sps, n)
			case h265.NALUTypePPS:
				set(&p.pps, n)
			}
		}
	}
	return changed
}

func (p *paramSets) codec() (fmp4.Codec, error) {
	switch p.kind {
	case kindH264:
		if p.sps == nil || p.pps == nil {
			return nil, errors.New("cmaf: no H.264 SPS/PPS yet")
		}
		return &fmp4.H264{SPS: p.sps, PPS: p.pps}, nil
	case kindH265:
		if p.vps == nil || p.sps == nil || p.pps == nil {
			return nil, errors.New("cmaf: no H.265 VPS/SPS/PPS yet")
		}
		return &fmp4.H265{VPS: p.vps, SPS: p.sps, PPS: p.pps}, nil
	}
	return nil, errors.New("cmaf: not video")
}

// sampleData converts an access unit with the muxer's video codec, which
// keeps parameter sets in band when they differ from the init segment's.
func sampleData(c fmp4.Codec, nalus [][]byte) ([]byte, bool) {
	switch v := c.(type) {
	case *fmp4.H264:
		return v.SampleData(nalus)
	case *fmp4.H265:
		return v.SampleData(nalus)
	}
	return nil, false
}

// unwrapper extends 32-bit RTP timestamps to 64 bits.
type unwrapper struct {
	last    uint32
	ext     int64
	started bool
}

func (u *unwrapper) extend(ts uint32) int64 {
	if !u.started {
		u.started, u.last, u.ext = true, ts, int64(ts)
		return u.ext
	}
	u.ext += int64(int32(ts - u.last))
	u.last = ts
	return u.ext
}

// lossStats returns the packets the depacketizer found missing or late.
func (t *track) lossStats() (lost, late uint64) {
	switch t.kind {
	case kindH264:
		st := t.h264d.Stats()
		return st.PacketsLost, st.PacketsLate
	case kindH265:
		st := t.h265d.Stats()
		return st.PacketsLost, st.PacketsLate
	case kindAAC:
		st := t.aacd.Stats()
		return st.PacketsLost, st.PacketsLate
	}
	return 0, 0
}
