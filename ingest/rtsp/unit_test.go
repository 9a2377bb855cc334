package rtsp

import (
	"bytes"
	"encoding/hex"
	"math/rand/v2"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"

	"github.com/backchannel/backchannel/internal/codec/h264"
	"github.com/backchannel/backchannel/internal/media"
)

// What ffmpeg 5.1 announces for libx264 + AAC.
const ffmpegSDP = "v=0\r\n" +
	"o=- 0 0 IN IP4 127.0.0.1\r\n" +
	"s=No Name\r\n" +
	"c=IN IP4 127.0.0.1\r\n" +
	"t=0 0\r\n" +
	"a=tool:libavformat 59.27.100\r\n" +
	"m=video 0 RTP/AVP 96\r\n" +
	"b=AS:1842\r\n" +
	"a=rtpmap:96 H264/90000\r\n" +
	"a=fmtp:96 packetization-mode=1; sprop-parameter-sets=Z0LAHtoCgL/lwEQAAAMABAAAAwDIPFi6gA==,aM4PyA==; profile-level-id=42C01E\r\n" +
	"a=control:streamid=0\r\n" +
	"m=audio 0 RTP/AVP 97\r\n" +
	"b=AS:128\r\n" +
	"a=rtpmap:97 MPEG4-GENERIC/44100/2\r\n" +
	"a=fmtp:97 profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3; config=121056E500\r\n" +
	"a=control:streamid=1\r\n"

// What an IP camera describes (from a public bug report): H.264 and G.711
// A-law under its static payload type, plus lines we do not use.
const cameraSDP = "v=0\r\n" +
	"o=StreamingServer 3433055887 1684536740666125 IN IP4 10.194.0.254\r\n" +
	"s=av0_1\r\n" +
	"e=NONE\r\n" +
	"c=IN IP4 0.0.0.0\r\n" +
	"t=0 0\r\n" +
	"m=video 0 RTP/AVP 96\r\n" +
	"b=AS:348\r\n" +
	"a=control:trackID=1\r\n" +
	"a=rtpmap:96 H264/90000\r\n" +
	"a=fmtp:96 profile-level-id=4d001f;packetization-mode=1;sprop-parameter-sets=Z00AH5WoPAQ5,aO48gA==\r\n" +
	"a=x-dimensions:960,528\r\n" +
	"m=audio 0 RTP/AVP 8\r\n" +
	"b=AS:64\r\n" +
	"a=control:trackID=2\r\n" +
	"a=rtpmap:8 PCMA/8000/1\r\n"

func TestParseSDPFFmpeg(t *testing.T) {
	_, ms, err := parseSDP([]byte(ffmpegSDP))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 {
		t.Fatalf("%d media", len(ms))
	}
	v, a := ms[0], ms[1]
	if v.Kind != media.KindVideo || v.Codec.MimeType != media.MimeH264 || v.Codec.ClockRate != 90000 || v.Control != "streamid=0" || v.Unsupported != "" {
		t.Fatalf("video %+v", v)
	}
	if a.Kind != media.KindAudio || a.Codec.MimeType != media.MimeAAC || a.Codec.ClockRate != 44100 || a.Codec.Channels != 2 || a.PayloadType != 97 || a.Unsupported != "" {
		t.Fatalf("audio %+v", a)
	}
	if got := a.Codec.SampleRate(); got != 44100 {
		t.Fatalf("AAC sample rate %d", got)
	}
}

func TestParseSDPCamera(t *testing.T) {
	_, ms, err := parseSDP([]byte(cameraSDP))
	if err != nil {
		t.Fatal(err)
	}
	if ms[0].Codec.MimeType != media.MimeH264 || ms[0].Control != "trackID=1" {
		t.Fatalf("video %+v", ms[0])
	}
	if ms[1].Codec.MimeType != media.MimePCMA || ms[1].PayloadType != 8 || ms[1].Codec.ClockRate != 8000 || ms[1].Unsupported != "" {
		t.Fatalf("audio %+v", ms[1])
	}
	// Without rtpmap, the static type still says what it is.
	noMap := strings.Replace(cameraSDP, "a=rtpmap:8 PCMA/8000/1\r\n", "", 1)
	_, ms, err = parseSDP([]byte(noMap))
	if err != nil || ms[1].Codec.MimeType != media.MimePCMA {
		t.Fatalf("static payload type: %+v %v", ms, err)
	}
}

func TestParseSDPRepairsMissingLines(t *testing.T) {
	broken := strings.NewReplacer("t=0 0\r\n", "", "s=av0_1\r\n", "").Replace(cameraSDP)
	_, ms, err := parseSDP([]byte(broken))
	if err != nil || len(ms) != 2 || ms[0].Codec.MimeType != media.MimeH264 {
		t.Fatalf("%+v %v", ms, err)
	}
	lf := strings.ReplaceAll(ffmpegSDP, "\r\n", "\n")
	if _, ms, err := parseSDP([]byte(lf)); err != nil || len(ms) != 2 {
		t.Fatalf("LF line ends: %v", err)
	}
}

func TestParseSDPUnsupported(t *testing.T) {
	sdp := strings.NewReplacer("H264/90000", "VP9/90000", "MPEG4-GENERIC/44100/2", "MP4A-LATM/44100/2").Replace(ffmpegSDP)
	_, ms, err := parseSDP([]byte(sdp))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.Unsupported == "" {
			t.Errorf("%s accepted", m.Codec.MimeType)
		}
	}
	mode2 := strings.Replace(ffmpegSDP, "packetization-mode=1", "packetization-mode=2", 1)
	_, ms, _ = parseSDP([]byte(mode2))
	if ms[0].Unsupported == "" {
		t.Error("H.264 interleaved mode accepted")
	}
	for _, bad := range []string{"", "garbage", "v=0\r\no=- 0 0 IN IP4 1.2.3.4\r\ns=x\r\nt=0 0\r\n"} {
		if _, _, err := parseSDP([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestControlTailFFmpegQuirk(t *testing.T) {
	cases := []struct{ url, stream, tail, query string }{
		{"rtsp://h:8554/x", "x", "", ""},
		{"rtsp://h:8554/x/", "x", "", ""},
		{"rtsp://h:8554/x?key=abc", "x", "", "key=abc"},
		{"rtsp://h:8554/x/streamid=0", "x", "streamid=0", ""},
		{"rtsp://h:8554/x?key=abc/streamid=0", "x", "streamid=0", "key=abc"},
		{"rtsp://h:8554/x/trackID=1?key=abc", "x", "trackID=1", "key=abc"},
		{"rtsp://h:8554/my%20cam", "my cam", "", ""},
	}
	for _, c := range cases {
		u, err := url.Parse(c.url)
		if err != nil {
			t.Fatal(err)
		}
		s, tail, q := controlTail(u)
		if s != c.stream || tail != c.tail || q != c.query {
			t.Errorf("%s: (%q, %q, %q), want (%q, %q, %q)", c.url, s, tail, q, c.stream, c.tail, c.query)
		}
		if k := queryKey(q); strings.Contains(c.query, "key=") && k != "abc" {
			t.Errorf("%s: key %q", c.url, k)
		}
	}
	if got := tailOf("rtsp://h/x/trackID=0"); got != "trackID=0" {
		t.Errorf("absolute control tail %q", got)
	}
	if got := tailOf("streamid=1"); got != "streamid=1" {
		t.Errorf("relative control tail %q", got)
	}
}

func TestBuildSDPRoundTrip(t *testing.T) {
	reg := media.NewRegistry("n")
	_, ms, _ := parseSDP([]byte(ffmpegSDP))
	var cs []media.Codec
	for _, m := range ms {
		cs = append(cs, m.Codec)
	}
	pub, err := reg.Publish("cup", media.PublisherInfo{}, cs, fakeSource{})
	if err != nil {
		t.Fatal(err)
	}
	body, tracks := buildSDP("rtsp://h:8554/cup", "cup", "127.0.0.1", pub.Stream().Tracks(), time.Now())
	ctl, back, err := parseSDP(body)
	if err != nil {
		t.Fatalf("%v\n%s", err, body)
	}
	if ctl != "rtsp://h:8554/cup" || len(back) != 2 || len(tracks) != 2 {
		t.Fatalf("control %q, %d media:\n%s", ctl, len(back), body)
	}
	if back[0].Control != "rtsp://h:8554/cup/trackID=0" || tailOf(back[1].Control) != "trackID=1" {
		t.Fatalf("controls %q %q", back[0].Control, back[1].Control)
	}
	if !strings.Contains(back[0].Codec.Fmtp, "sprop-parameter-sets=Z0LAHtoCgL/lwEQAAAMABAAAAwDIPFi6gA==,aM4PyA==") {
		t.Fatalf("H.264 fmtp %q", back[0].Codec.Fmtp)
	}
	if back[1].Codec.MimeType != media.MimeAAC || back[1].Codec.ClockRate != 44100 || back[1].Codec.Channels != 2 ||
		media.FmtpParam(back[1].Codec.Fmtp, "config", "") != "121056E500" {
		t.Fatalf("AAC %+v", back[1].Codec)
	}
}

type fakeSource struct{}

func (fakeSource) RequestKeyframe(media.Kind) {}
func (fakeSource) Close() error               { return nil }

var (
	testSPS = mustHex("6742c01eda0280bfe5c04400000300040000030c83c58ba8")
	testPPS = mustHex("68ce0fc8")
)

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func nalu(typ byte, size int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(r.Uint32()) | 1 // never 00 00 01
	}
	b[0] = 0x60 | typ
	return b
}

// packetize makes publisher packets the way ffmpeg does (1460-byte
// payloads, FU-A), without parameter sets in band.
func packetize(seq *uint16, ts uint32, nalus ...[]byte) []*rtp.Packet {
	var annexB []byte
	for _, n := range nalus {
		annexB = append(annexB, 0, 0, 0, 1)
		annexB = append(annexB, n...)
	}
	p := &codecs.H264Payloader{}
	payloads := p.Payload(1460, annexB)
	var out []*rtp.Packet
	for i, pl := range payloads {
		out = append(out, &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SSRC: 7, SequenceNumber: *seq, Timestamp: ts, Marker: i == len(payloads)-1}, Payload: pl})
		*seq++
	}
	return out
}

func TestH264NormalizerInjectsParameterSetsAndFragments(t *testing.T) {
	n := newH264Normalizer(testSPS, testPPS, 100)
	idr := nalu(5, 5000, 1)
	p1 := nalu(1, 700, 2)
	p2 := nalu(1, 300, 3)
	var seq uint16 = 40000
	var out []rtp.Packet
	push := func(pkts []*rtp.Packet) {
		for _, p := range pkts {
			got, err := n.push(p)
			if err != nil {
				t.Fatal(err)
			}
			for _, g := range got {
				cp := g
				cp.Payload = append([]byte(nil), g.Payload...)
				out = append(out, cp)
			}
		}
	}
	push(packetize(&seq, 1000, idr))
	push(packetize(&seq, 4600, p1, p2))
	push(packetize(&seq, 8200, p1))

	for i, p := range out {
		if len(p.Payload) > maxH264Payload {
			t.Fatalf("packet %d carries %d bytes", i, len(p.Payload))
		}
		if p.SequenceNumber != uint16(100+i) {
			t.Fatalf("packet %d has sequence %d", i, p.SequenceNumber)
		}
	}
	if out[0].Payload[0]&0x1f != 24 {
		t.Fatalf("first packet type %d, want a STAP-A with the parameter sets", out[0].Payload[0]&0x1f)
	}
	// Reassemble what came out: the IDR unit now starts with SPS and PPS.
	var d h264.Depacketizer
	var aus []h264.AccessUnit
	for i := range out {
		got, err := d.Push(&out[i])
		if err != nil {
			t.Fatal(err)
		}
		for _, au := range got {
			var cp h264.AccessUnit
			cp.PTS = au.PTS
			for _, x := range au.NALUs {
				cp.NALUs = append(cp.NALUs, append([]byte(nil), x...))
			}
			aus = append(aus, cp)
		}
	}
	if len(aus) != 3 {
		t.Fatalf("%d access units reassembled, want 3", len(aus))
	}
	first := aus[0]
	if len(first.NALUs) != 3 || !bytes.Equal(first.NALUs[0], testSPS) || !bytes.Equal(first.NALUs[1], testPPS) || !bytes.Equal(first.NALUs[2], idr) {
		t.Fatalf("IDR unit has %d NAL units", len(first.NALUs))
	}
	if uint32(first.PTS) != 1000 || uint32(aus[1].PTS) != 4600 {
		t.Fatalf("timestamps %d %d", first.PTS, aus[1].PTS)
	}
	if len(aus[1].NALUs) != 2 || !bytes.Equal(aus[1].NALUs[0], p1) || !bytes.Equal(aus[1].NALUs[1], p2) {
		t.Fatal("P unit changed")
	}
	// Markers close units and nothing else.
	markers := 0
	for _, p := range out {
		if p.Marker {
			markers++
		}
	}
	if markers != 3 {
		t.Fatalf("%d markers for 3 units", markers)
	}
}

func TestH264NormalizerLeavesGapAfterLoss(t *testing.T) {
	n := newH264Normalizer(testSPS, testPPS, 0)
	n.depack.ReorderWindow = -1
	var seq uint16 = 10
	var out []rtp.Packet
	a := packetize(&seq, 0, nalu(5, 4000, 1))
	b := packetize(&seq, 3600, nalu(1, 4000, 2))
	c := packetize(&seq, 7200, nalu(1, 500, 3))
	pkts := append(append(a, b[0]), b[2:]...) // b[1] lost
	pkts = append(pkts, c...)
	for _, p := range pkts {
		got, _ := n.push(p)
		out = append(out, got...)
	}
	// The lost unit is gone and a sequence gap marks it.
	var last uint16
	gaps := 0
	for i, p := range out {
		if p.Timestamp == 3600 {
			t.Fatal("a unit with a lost packet was forwarded")
		}
		if i > 0 && p.SequenceNumber != last+1 {
			gaps++
		}
		last = p.SequenceNumber
	}
	if gaps != 1 {
		t.Fatalf("%d sequence gaps, want 1", gaps)
	}
	if st := n.stats(); st.PacketsLost == 0 || st.AccessUnitsDropped == 0 {
		t.Fatalf("stats %+v", st)
	}
}

func FuzzParseSDP(f *testing.F) {
	f.Add([]byte(ffmpegSDP))
	f.Add([]byte(cameraSDP))
	f.Add([]byte("v=0\r\no=- 0 0 IN IP4 1.2.3.4\r\ns=x\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H265/90000\r\na=fmtp:96 sprop-max-don-diff=2\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, ms, err := parseSDP(b)
		if err != nil {
			return
		}
		for _, m := range ms {
			_ = tailOf(m.Control)
			if m.Unsupported == "" && m.Codec.ClockRate == 0 {
				t.Fatalf("supported media without clock rate: %+v", m)
			}
		}
	})
}

// FuzzH264Normalizer feeds arbitrary packets (payload, sequence and
// timestamp from the input) and checks the output invariants.
func FuzzH264Normalizer(f *testing.F) {
	var seq uint16
	var seed []byte
	for _, p := range packetize(&seq, 0, nalu(5, 3000, 1), nalu(1, 200, 2)) {
		seed = append(seed, byte(len(p.Payload)>>8), byte(len(p.Payload)))
		seed = append(seed, p.Payload...)
	}
	f.Add(seed)
	f.Add([]byte{0, 3, 0x78, 0, 9, 0, 2, 0x7c, 0x85})
	f.Fuzz(func(t *testing.T, b []byte) {
		n := newH264Normalizer(testSPS, testPPS, 0)
		var seq uint16
		ts := uint32(0)
		for len(b) >= 2 {
			size := int(b[0])<<8 | int(b[1])
			b = b[2:]
			if size > len(b) {
				size = len(b)
			}
			payload := append([]byte(nil), b[:size]...)
			b = b[size:]
			if len(payload) > 0 && payload[0]&0x80 != 0 {
				ts += 3000
			}
			out, _ := n.push(&rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: ts, Marker: size%3 == 0}, Payload: payload})
			seq++
			for _, o := range out {
				if len(o.Payload) == 0 || len(o.Payload) > maxH264Payload {
					t.Fatalf("output payload of %d bytes", len(o.Payload))
				}
			}
		}
	})
}

func FuzzControlTail(f *testing.F) {
	f.Add("rtsp://h:8554/x?key=abc/streamid=0")
	f.Add("rtsp://h/a/b/c?//")
	f.Fuzz(func(t *testing.T, s string) {
		u, err := url.Parse(s)
		if err != nil {
			return
		}
		stream, _, _ := controlTail(u)
		if strings.Contains(stream, "/") && !strings.Contains(u.EscapedPath(), "%2F") && !strings.Contains(u.EscapedPath(), "%2f") {
			t.Fatalf("stream %q from %q contains a slash", stream, s)
		}
		_ = tailOf(s)
	})
}

// keyframeAsker is a media.Source that, like the RTSP sessions, reads the
// source SSRC of its input when the stream asks for a keyframe.
type keyframeAsker struct {
	in   *trackInput
	asks chan uint32
}

func (k *keyframeAsker) RequestKeyframe(media.Kind) { k.asks <- k.in.sourceSSRC() }
func (k *keyframeAsker) Close() error               { return nil }

// A new video source is joined at a keyframe: its first delta frames make
// the stream ask the publisher for one, from inside the input's own write.
// That request must not wait for the write to finish.
func TestKeyframeRequestFromTheWritePath(t *testing.T) {
	reg := media.NewRegistry("test")
	in := newTrackInput(Media{Kind: media.KindVideo, Codec: media.Codec{MimeType: media.MimeH264, ClockRate: 90000, Fmtp: "packetization-mode=1;profile-level-id=42e01f"}}, nil)
	src := &keyframeAsker{in: in, asks: make(chan uint32, 4)}
	pub, err := reg.Publish("cam", media.PublisherInfo{Protocol: media.ProtocolRTSP}, []media.Codec{in.registryCodec()}, src)
	if err != nil {
		t.Fatal(err)
	}
	w, _ := pub.Track(media.KindVideo)
	in.attach(w)
	delta := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: 1, Timestamp: 3000, SSRC: 0xcafe, Marker: true},
		Payload: []byte{0x41, 0x9a, 1, 2, 3}} // a non-IDR slice
	b, _ := delta.Marshal()
	done := make(chan error, 1)
	go func() { done <- in.writeRTP(b) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
		defer pub.Close() // not on a deadlock: it would wait for the stuck write
	case <-time.After(5 * time.Second):
		t.Fatal("writing a delta frame deadlocked on the keyframe request it caused")
	}
	select {
	case ssrc := <-src.asks:
		if ssrc != 0xcafe {
			t.Fatalf("keyframe asked for SSRC %#x, want the source's 0xcafe", ssrc)
		}
	default:
		t.Fatal("no keyframe request for a stream that starts with a delta frame")
	}
}
