// Package cmaftest holds what the tests of the CMAF pipeline, the LL-HLS
// packager and the recorder share: RTP sources made from real encoders
// (the demo clip; libx264 with B-frames and AAC, as an RTSP camera sends
// them), a feeder that publishes them into a media.Registry, and ffprobe /
// ffmpeg as judges. A missing ffmpeg fails the test; it never skips.
package cmaftest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"

	"github.com/backchannel/backchannel/internal/codec/aac"
	"github.com/backchannel/backchannel/internal/codec/h264"
	"github.com/backchannel/backchannel/internal/codec/h265"
	"github.com/backchannel/backchannel/internal/demo"
	"github.com/backchannel/backchannel/internal/fmp4"
	"github.com/backchannel/backchannel/internal/media"
)

// Packet is one RTP packet of a source with the time it is due, from the
// source's start.
type Packet struct {
	Kind media.Kind
	At   time.Duration
	RTP  *rtp.Packet
}

// Source is a publishable sequence of packets.
type Source struct {
	Codecs  []media.Codec
	Packets []Packet // in send order
	// Length is the media duration covered.
	Length time.Duration
}

// Tool returns the path of ffmpeg or ffprobe or fails the test.
func Tool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is required by this test and is not installed (run scripts/test-deps.sh): %v", name, err)
	}
	return p
}

// DemoClip is the demo broadcast's clip (H.264 constrained baseline
// 640x360 at 30 fps, keyframe every second, SPS/PPS in band; Opus mono)
// looped n times, packetized the way the WHIP publisher sends it.
func DemoClip(t testing.TB, loops int) *Source {
	t.Helper()
	clip, err := demo.LoadClip()
	if err != nil {
		t.Fatal(err)
	}
	src := &Source{Codecs: []media.Codec{
		{MimeType: media.MimeH264, ClockRate: 90000, Fmtp: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"},
		{MimeType: media.MimeOpus, ClockRate: 48000, Channels: 2, Fmtp: "minptime=10;useinbandfec=1"},
	}}
	vp := rtp.NewPacketizer(1200, 96, 1, &codecs.H264Payloader{}, rtp.NewFixedSequencer(1000), 90000)
	ap := rtp.NewPacketizer(1200, 111, 2, &codecs.OpusPayloader{}, rtp.NewFixedSequencer(5000), 48000)
	const frame = time.Second / demo.FrameRate
	vts, ats := uint32(90000*7), uint32(48000*3)
	var video, audio []Packet
	for l := range loops {
		for i, f := range clip.Frames {
			at := time.Duration(l*len(clip.Frames)+i) * frame
			for _, p := range vp.Packetize(f, 0) {
				p.Timestamp = vts
				video = append(video, Packet{Kind: media.KindVideo, At: at, RTP: p})
			}
			vts += 90000 / demo.FrameRate
		}
		for i, a := range clip.Audio {
			at := time.Duration(l*len(clip.Audio)+i) * 20 * time.Millisecond
			for _, p := range ap.Packetize(a, 0) {
				p.Timestamp = ats
				audio = append(audio, Packet{Kind: media.KindAudio, At: at, RTP: p})
			}
			ats += 960
		}
	}
	src.Packets = interleave(video, audio)
	src.Length = time.Duration(loops) * clip.Duration()
	return src
}

func interleave(a, b []Packet) []Packet {
	out := append(append([]Packet(nil), a...), b...)
	slices.SortStableFunc(out, func(x, y Packet) int { return int(x.At - y.At) })
	return out
}

// X264AAC encodes seconds of testsrc2 640x360 at 30 fps with libx264's
// defaults (B-frames, b-pyramid; keyframe every 30 frames) and a 48 kHz
// AAC-LC mono sine, and packetizes them as an RTSP camera would: H.264
// (RFC 6184, sprop-parameter-sets in the fmtp) with RTP timestamps = PTS,
// AAC as mpeg4-generic AAC-hbr (RFC 3640), one access unit per packet.
func X264AAC(t testing.TB, seconds int) *Source {
	t.Helper()
	dir := t.TempDir()
	mp4 := filepath.Join(dir, "src.mp4")
	FFmpeg(t, "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30", "-f", "lavfi", "-i", "sine=f=440:sample_rate=48000",
		"-t", fmt.Sprint(seconds), "-c:v", "libx264", "-threads", "1", "-g", "30", "-pix_fmt", "yuv420p",
		"-x264-params", "repeat-headers=1", "-c:a", "aac", "-ac", "1", "-b:a", "64k",
		"-movflags", "frag_keyframe+empty_moov+default_base_moof", mp4)
	b, err := os.ReadFile(mp4)
	if err != nil {
		t.Fatal(err)
	}
	tracks, err := fmp4.ParseInit(b)
	if err != nil {
		t.Fatal(err)
	}
	frags, err := fmp4.ParseFragments(b, fmp4.Defaults(tracks))
	if err != nil {
		t.Fatal(err)
	}
	var videoID, audioID uint32
	for _, tr := range tracks {
		switch tr.Handler {
		case "vide":
			videoID = tr.ID
		case "soun":
			audioID = tr.ID
		}
	}
	var vs, as []fmp4.ReadSample
	for _, f := range frags {
		for _, tf := range f.Tracks {
			switch tf.TrackID {
			case videoID:
				vs = append(vs, tf.Samples...)
			case audioID:
				as = append(as, tf.Samples...)
			}
		}
	}
	if len(vs) == 0 || len(as) == 0 {
		t.Fatalf("x264+aac source: %d video and %d audio samples", len(vs), len(as))
	}
	// Video: time scale from the init (libx264 in mp4 uses 15360 for 30 fps).
	var vScale, aScale uint32
	for _, tr := range tracks {
		if tr.ID == videoID {
			vScale = tr.TimeScale
		}
		if tr.ID == audioID {
			aScale = tr.TimeScale
		}
	}
	var sps, pps []byte
	vp := rtp.NewPacketizer(1200, 96, 3, &codecs.H264Payloader{}, rtp.NewFixedSequencer(100), 90000)
	var video []Packet
	// RTP time = PTS; a decoder-order sender emits each frame at its DTS.
	shift := int64(90000) // keep rescaled times positive
	for _, s := range vs {
		nalus, err := h264.SplitAVCC(s.Data, 1024)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range nalus {
			switch h264.TypeOf(n) {
			case h264.NALUTypeSPS:
				sps = n
			case h264.NALUTypePPS:
				pps = n
			}
		}
		pts := s.PTS*90000/int64(vScale) + shift
		dts := s.DTS*90000/int64(vScale) + shift
		at := time.Duration(dts-shift) * time.Second / 90000
		for _, p := range vp.Packetize(h264.AppendAnnexB(nil, nalus), 0) {
			p.Timestamp = uint32(pts)
			video = append(video, Packet{Kind: media.KindVideo, At: at, RTP: p})
		}
	}
	if sps == nil || pps == nil {
		t.Fatal("x264 source without in-band SPS/PPS")
	}
	cfg, err := aac.Config{ObjectType: aac.ObjectTypeAACLC, SampleRate: int(aScale), ChannelConfig: 1}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	seq := uint16(7000)
	var audio []Packet
	for _, s := range as {
		payload := make([]byte, 4, 4+len(s.Data))
		binary.BigEndian.PutUint16(payload, 16)                         // AU-headers-length in bits
		binary.BigEndian.PutUint16(payload[2:], uint16(len(s.Data))<<3) // 13-bit size, 3-bit index 0
		payload = append(payload, s.Data...)
		p := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 97, SequenceNumber: seq, Timestamp: uint32(s.DTS + int64(aScale)), SSRC: 4, Marker: true}, Payload: payload}
		seq++
		audio = append(audio, Packet{Kind: media.KindAudio, At: time.Duration(s.DTS) * time.Second / time.Duration(aScale), RTP: p})
	}
	sprop := base64.StdEncoding.EncodeToString(sps) + "," + base64.StdEncoding.EncodeToString(pps)
	src := &Source{
		Codecs: []media.Codec{
			{MimeType: media.MimeH264, ClockRate: 90000, Fmtp: "packetization-mode=1;profile-level-id=" + hex.EncodeToString(sps[1:4]) + ";sprop-parameter-sets=" + sprop},
			{MimeType: "audio/mpeg4-generic", ClockRate: aScale, Channels: 1,
				Fmtp: "streamtype=5;profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3;config=" + hex.EncodeToString(cfg)},
		},
		Packets: interleave(video, audio),
		Length:  time.Duration(seconds) * time.Second,
	}
	return src
}

// Loop repeats a source n times with continuous sequence numbers and
// timestamps, as a publisher looping a clip sends it.
func Loop(src *Source, n int) *Source {
	out := &Source{Codecs: src.Codecs, Length: src.Length * time.Duration(n)}
	seqSpan := map[media.Kind]uint16{}
	tsSpan := map[media.Kind]uint32{}
	for _, p := range src.Packets {
		seqSpan[p.Kind]++
	}
	for _, c := range src.Codecs {
		tsSpan[c.Kind()] = uint32(src.Length.Seconds() * float64(c.ClockRate))
	}
	for l := range n {
		for _, p := range src.Packets {
			cp := *p.RTP
			cp.SequenceNumber += uint16(l) * seqSpan[p.Kind]
			cp.Timestamp += uint32(l) * tsSpan[p.Kind]
			out.Packets = append(out.Packets, Packet{Kind: p.Kind, At: p.At + time.Duration(l)*src.Length, RTP: &cp})
		}
	}
	return out
}

// X265 encodes seconds of testsrc2 640x360 at 30 fps with libx265's
// defaults (B-frames; keyframe every 30 frames, parameter sets repeated)
// and packetizes it as RFC 7798 H.265 with sprop-vps/sps/pps, RTP
// timestamps = PTS: what an RTSP camera sends. Video only.
func X265(t testing.TB, seconds int) *Source {
	t.Helper()
	mp4 := filepath.Join(t.TempDir(), "src.mp4")
	FFmpeg(t, "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30", "-t", fmt.Sprint(seconds),
		"-c:v", "libx265", "-pix_fmt", "yuv420p", "-x265-params", "keyint=30:min-keyint=30:repeat-headers=1:log-level=error:pools=1:frame-threads=1",
		"-tag:v", "hvc1", "-movflags", "frag_keyframe+empty_moov+default_base_moof", mp4)
	b, err := os.ReadFile(mp4)
	if err != nil {
		t.Fatal(err)
	}
	tracks, err := fmp4.ParseInit(b)
	if err != nil || len(tracks) != 1 {
		t.Fatalf("x265 source: %d tracks, %v", len(tracks), err)
	}
	frags, err := fmp4.ParseFragments(b, fmp4.Defaults(tracks))
	if err != nil {
		t.Fatal(err)
	}
	scale := int64(tracks[0].TimeScale)
	var vps, sps, pps []byte
	vp := rtp.NewPacketizer(1200, 96, 5, &codecs.H265Payloader{}, rtp.NewFixedSequencer(100), 90000)
	var video []Packet
	for _, f := range frags {
		for _, tf := range f.Tracks {
			for _, s := range tf.Samples {
				nalus, err := h264.SplitAVCC(s.Data, 1024)
				if err != nil {
					t.Fatal(err)
				}
				for _, n := range nalus {
					switch h265.TypeOf(n) {
					case h265.NALUTypeVPS:
						vps = n
					case h265.NALUTypeSPS:
						sps = n
					case h265.NALUTypePPS:
						pps = n
					}
				}
				pts := s.PTS*90000/scale + 90000
				at := time.Duration(s.DTS) * time.Second / time.Duration(scale)
				for _, p := range vp.Packetize(h264.AppendAnnexB(nil, nalus), 0) {
					p.Timestamp = uint32(pts)
					video = append(video, Packet{Kind: media.KindVideo, At: at, RTP: p})
				}
			}
		}
	}
	if vps == nil || sps == nil || pps == nil {
		t.Fatal("x265 source without in-band parameter sets")
	}
	enc := base64.StdEncoding.EncodeToString
	return &Source{
		Codecs:  []media.Codec{{MimeType: "video/H265", ClockRate: 90000, Fmtp: "sprop-vps=" + enc(vps) + ";sprop-sps=" + enc(sps) + ";sprop-pps=" + enc(pps)}},
		Packets: video,
		Length:  time.Duration(seconds) * time.Second,
	}
}

// nopSource is the publisher side of a fed publication.
type nopSource struct{ keyframes chan struct{} }

func (s *nopSource) RequestKeyframe(media.Kind) {
	select {
	case s.keyframes <- struct{}{}:
	default:
	}
}
func (s *nopSource) Close() error { return nil }

// Publish registers the source's tracks as stream name.
func Publish(t testing.TB, reg *media.Registry, name string, src *Source) *media.Publication {
	t.Helper()
	pub, err := reg.Publish(name, media.PublisherInfo{Protocol: "test", Remote: "127.0.0.1"}, src.Codecs, &nopSource{keyframes: make(chan struct{}, 1)})
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// Feed writes the source's packets into the publication. With speed 1 it
// paces them in real time; with a larger speed that much faster. It
// returns when done or when ctx ends.
func Feed(ctx context.Context, pub *media.Publication, src *Source, speed float64) error {
	start := time.Now()
	for _, p := range src.Packets {
		due := start.Add(time.Duration(float64(p.At) / speed))
		if d := time.Until(due); d > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(d):
			}
		}
		w, ok := pub.Track(p.Kind)
		if !ok {
			continue
		}
		cp := *p.RTP
		cp.Payload = append([]byte(nil), p.RTP.Payload...)
		if err := w.WriteRTP(&cp); err != nil {
			return err
		}
	}
	return nil
}

// FFmpeg runs ffmpeg with args (after -v error -y) and fails on error.
func FFmpeg(t testing.TB, args ...string) {
	t.Helper()
	cmd := exec.Command(Tool(t, "ffmpeg"), append([]string{"-hide_banner", "-nostdin", "-v", "error", "-y"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("ffmpeg %v: %v\n%s", args, err, stderr.String())
	}
}

// Decode runs `ffmpeg -v error -i input [outputOpts] -f null -` and returns
// what it printed: empty means a clean decode. For variable-frame-rate
// sources (a WebRTC camera) pass VFR: with ffmpeg's default encoder time
// base (one tick per guessed frame interval) their frames collide in the
// null muxer, which then complains about its own timestamps.
func Decode(t testing.TB, input string, outputOpts ...string) string {
	t.Helper()
	return decode(t, input, outputOpts...)
}

// VFR are Decode output options for variable-frame-rate sources: the
// encoder keeps the demuxer's time base.
var VFR = []string{"-enc_time_base", "-1"}

func decode(t testing.TB, input string, outputOpts ...string) string {
	t.Helper()
	args := []string{"-hide_banner", "-nostdin", "-v", "error", "-i", input}
	args = append(args, outputOpts...)
	args = append(args, "-f", "null", "-")
	cmd := exec.Command(Tool(t, "ffmpeg"), args...)
	var out bytes.Buffer
	cmd.Stderr, cmd.Stdout = &out, &out
	err := cmd.Run()
	if err != nil {
		return fmt.Sprintf("ffmpeg: %v\n%s", err, out.String())
	}
	return strings.TrimSpace(out.String())
}

// Stream is the part of ffprobe's stream description the tests check.
type Stream struct {
	Index        int    `json:"index"`
	CodecName    string `json:"codec_name"`
	CodecType    string `json:"codec_type"`
	Width        int    `json:"width"`
	Height       int    `json:"height"`
	HasBFrames   int    `json:"has_b_frames"`
	RFrameRate   string `json:"r_frame_rate"`
	AvgFrameRate string `json:"avg_frame_rate"`
	TimeBase     string `json:"time_base"`
	SampleRate   string `json:"sample_rate"`
	Channels     int    `json:"channels"`
}

// FrameRate parses r_frame_rate.
func (s Stream) FrameRate() float64 {
	r, ok := new(big.Rat).SetString(s.RFrameRate)
	if !ok {
		return 0
	}
	f, _ := r.Float64()
	return f
}

// ProbePacket is one packet of ffprobe's -show_packets.
type ProbePacket struct {
	StreamIndex int    `json:"stream_index"`
	PTS         *int64 `json:"pts"`
	DTS         *int64 `json:"dts"`
	Flags       string `json:"flags"`
}

// Probe is ffprobe's view of a file or URL.
type Probe struct {
	Streams []Stream      `json:"streams"`
	Packets []ProbePacket `json:"packets"`
}

// Stream returns the first stream of a type ("video", "audio").
func (p Probe) Stream(typ string) (Stream, bool) {
	for _, s := range p.Streams {
		if s.CodecType == typ {
			return s, true
		}
	}
	return Stream{}, false
}

// FFprobe runs ffprobe -show_streams -show_packets on input; extra
// arguments go before the input.
func FFprobe(t testing.TB, input string, extra ...string) Probe {
	t.Helper()
	args := append([]string{"-v", "error", "-of", "json", "-show_streams", "-show_packets"}, extra...)
	args = append(args, input)
	cmd := exec.Command(Tool(t, "ffprobe"), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v\n%s", input, err, stderr.String())
	}
	var p Probe
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatalf("ffprobe output: %v", err)
	}
	return p
}

// CheckMonotonic fails unless every stream's packets have strictly
// increasing DTS, and DTS ≤ PTS for video. It returns the packet count per
// stream index.
func CheckMonotonic(t testing.TB, p Probe) map[int]int {
	t.Helper()
	last := map[int]int64{}
	count := map[int]int{}
	for i, pk := range p.Packets {
		if pk.DTS == nil || pk.PTS == nil {
			t.Fatalf("packet %d of stream %d has no timestamp", i, pk.StreamIndex)
		}
		if prev, ok := last[pk.StreamIndex]; ok && *pk.DTS <= prev {
			t.Fatalf("packet %d of stream %d: DTS %d after %d", i, pk.StreamIndex, *pk.DTS, prev)
		}
		if *pk.DTS > *pk.PTS {
			t.Fatalf("packet %d of stream %d: DTS %d > PTS %d", i, pk.StreamIndex, *pk.DTS, *pk.PTS)
		}
		last[pk.StreamIndex] = *pk.DTS
		count[pk.StreamIndex]++
	}
	return count
}
