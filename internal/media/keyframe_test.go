package media

import (
	"testing"

	"github.com/pion/rtp/codecs"
)

var (
	nalSPS   = []byte{0x67, 0x42, 0xc0, 0x1e, 0xd9}
	nalPPS   = []byte{0x68, 0xce, 0x3c, 0x80}
	nalIDR   = []byte{0x65, 0x88, 0x84, 0x00, 0x33}
	nalSlice = []byte{0x41, 0x9a, 0x02, 0x03}
	nalSEI   = []byte{0x06, 0x05, 0x01, 0xff}
)

func stapA(nals ...[]byte) []byte {
	out := []byte{0x78}
	for _, n := range nals {
		out = append(out, byte(len(n)>>8), byte(len(n)))
		out = append(out, n...)
	}
	return out
}

func fuA(nal []byte, start bool) []byte {
	fuHeader := nal[0] & 0x1f
	if start {
		fuHeader |= 0x80
	}
	return append([]byte{nal[0]&0xe0 | 28, fuHeader}, nal[1:]...)
}

func TestH264Keyframe(t *testing.T) {
	cases := []struct {
		name    string
		payload []byte
		want    bool
	}{
		{"single IDR", nalIDR, true},
		{"single non-IDR", nalSlice, false},
		{"single SPS", nalSPS, false},
		{"STAP-A SPS PPS IDR", stapA(nalSPS, nalPPS, nalIDR), true},
		{"STAP-A SPS PPS", stapA(nalSPS, nalPPS), false},
		{"STAP-A SEI slice", stapA(nalSEI, nalSlice), false},
		{"STAP-B with IDR", append([]byte{0x79, 0x00, 0x01}, stapA(nalIDR)[1:]...), true},
		{"FU-A IDR start", fuA(nalIDR, true), true},
		{"FU-A IDR middle", fuA(nalIDR, false), false},
		{"FU-A slice start", fuA(nalSlice, true), false},
		{"STAP-A truncated length", []byte{0x78, 0x00, 0x09, 0x65}, false},
		{"STAP-A zero length", []byte{0x78, 0x00, 0x00, 0x65}, false},
		{"empty", nil, false},
		{"FU-A without header", []byte{0x7c}, false},
	}
	for _, c := range cases {
		if got := H264Keyframe(c.payload); got != c.want {
			t.Errorf("%s: H264Keyframe = %v, want %v", c.name, got, c.want)
		}
		if got := IsKeyframe("video/h264", c.payload); got != c.want {
			t.Errorf("%s: IsKeyframe = %v, want %v", c.name, got, c.want)
		}
	}
}

func vp8Payload(t *testing.T, key bool, start bool) []byte {
	t.Helper()
	frame := make([]byte, 40)
	if !key {
		frame[0] = 0x01 // P bit set: interframe
	}
	var p codecs.VP8Payloader
	pkts := p.Payload(1200, frame)
	if len(pkts) != 1 {
		t.Fatalf("expected one packet, got %d", len(pkts))
	}
	if !start {
		pkts[0][0] &^= 0x10 // clear S
	}
	return pkts[0]
}

func TestVP8Keyframe(t *testing.T) {
	if !VP8Keyframe(vp8Payload(t, true, true)) {
		t.Error("key frame start not detected")
	}
	if VP8Keyframe(vp8Payload(t, false, true)) {
		t.Error("interframe reported as keyframe")
	}
	if VP8Keyframe(vp8Payload(t, true, false)) {
		t.Error("continuation packet reported as keyframe")
	}
	if VP8Keyframe(nil) || VP8Keyframe([]byte{0x90}) {
		t.Error("truncated payload reported as keyframe")
	}
	if !IsKeyframe("video/VP8", vp8Payload(t, true, true)) {
		t.Error("IsKeyframe(VP8) missed a key frame")
	}
	if IsKeyframe("audio/opus", nalIDR) {
		t.Error("audio reported a keyframe")
	}
}

func TestStartDetectorMarksFirstPacketOfKeyframeAccessUnit(t *testing.T) {
	d := newStartDetector(Codec{MimeType: MimeH264, ClockRate: 90000})
	idr := make([]byte, 3000)
	copy(idr, nalIDR)
	// Access unit 1 (ts 100): STAP-A(SPS,PPS), IDR FU-A start, IDR FU-A end.
	seq := []struct {
		ts      uint32
		payload []byte
		want    bool
	}{
		{100, stapA(nalSPS, nalPPS), true},
		{100, fuA(idr[:1500], true), false},
		{100, fuA(idr[:1500], false), false},
		{200, nalSlice, false},
		// An IDR without in-band parameter sets starts at its first packet.
		{300, fuA(idr[:1500], true), true},
		{300, fuA(idr[:1500], true), false}, // second slice of the same frame
		{400, stapA(nalSPS, nalPPS, nalIDR), true},
	}
	for i, s := range seq {
		if got := d.start(s.ts, s.payload); got != s.want {
			t.Errorf("packet %d: start = %v, want %v", i, got, s.want)
		}
	}
	v := newStartDetector(Codec{MimeType: MimeVP8, ClockRate: 90000})
	if !v.start(1, vp8Payload(t, true, true)) || v.start(2, vp8Payload(t, false, true)) {
		t.Error("VP8 start detection wrong")
	}
	a := newStartDetector(Codec{MimeType: MimeOpus, ClockRate: 48000})
	if a.start(1, nalIDR) {
		t.Error("audio start point reported")
	}
}

func FuzzH264Keyframe(f *testing.F) {
	f.Add(nalIDR)
	f.Add(stapA(nalSPS, nalPPS, nalIDR))
	f.Add(fuA(nalIDR, true))
	f.Add([]byte{0x79, 0x00})
	f.Add([]byte{0x78, 0xff, 0xff})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, payload []byte) {
		key := H264Keyframe(payload)
		sps, idr := h264Scan(payload)
		if key != idr {
			t.Fatalf("H264Keyframe=%v but scan idr=%v", key, idr)
		}
		// A decoder start point is exactly a packet with an SPS or an IDR
		// start, for the first packet of an access unit.
		d := newStartDetector(Codec{MimeType: MimeH264})
		if got := d.start(1, payload); got != (sps || idr) {
			t.Fatalf("start=%v, sps=%v idr=%v", got, sps, idr)
		}
	})
}

func FuzzVP8Keyframe(f *testing.F) {
	f.Add([]byte{0x10, 0x00, 0x9d, 0x01, 0x2a})
	f.Add([]byte{0x90, 0x80, 0x80, 0x01, 0x00})
	f.Add([]byte{0x90})
	f.Fuzz(func(t *testing.T, payload []byte) {
		key := VP8Keyframe(payload)
		if key && (len(payload) < 2 || payload[0]&0x10 == 0) {
			t.Fatalf("keyframe reported without the S bit: %x", payload)
		}
	})
}
