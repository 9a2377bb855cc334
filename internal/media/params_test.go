package media

import (
	"encoding/base64"
	"encoding/hex"
	"sync/atomic"
	"testing"
)

// Parameter sets libx264 and libx265 wrote for testsrc2 at 25 fps.
var (
	sps640x360 = mustHex("6764001eacd940a02ff97011000003000100000300320f162d96")
	sps320x240 = mustHex("6764000dacd94141fb011000000300100000030320f1429960")
	ppsX264    = mustHex("68ebe3cb22c0")
	vps265     = mustHex("40010c01ffff01600000030090000003000003003f959809")
	sps265     = mustHex("42010101600000030090000003000003003fa00502016965959a4932bc05a02000000300200000030321")
	pps265     = mustHex("4401c172b46240")
)

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func TestTrackParameterSetsFromSDPThenInBand(t *testing.T) {
	r := NewRegistry("n")
	c := Codec{MimeType: MimeH264, ClockRate: 90000,
		Fmtp: "packetization-mode=1;sprop-parameter-sets=" + b64(sps640x360) + "," + b64(ppsX264)}
	pub, err := r.Publish("s", PublisherInfo{Protocol: ProtocolRTSP}, []Codec{c}, &fakeSource{})
	if err != nil {
		t.Fatal(err)
	}
	w, _ := pub.Track(KindVideo)
	tr := w.Track()
	ps := tr.ParameterSets()
	if string(ps.SPS) != string(sps640x360) || string(ps.PPS) != string(ppsX264) {
		t.Fatalf("parameter sets from sprop: %x %x", ps.SPS, ps.PPS)
	}
	info := r.List()[0].Tracks[0]
	if info.Width != 640 || info.Height != 360 || info.FPS != 25 {
		t.Fatalf("track info from sprop: %+v", info)
	}

	// An in-band STAP-A with another SPS replaces them.
	if err := w.WriteRTP(pkt(1, 0, stapA(sps320x240, ppsX264, nalIDR))); err != nil {
		t.Fatal(err)
	}
	if f, ok := tr.VideoFormat(); !ok || f.Width != 320 || f.Height != 240 {
		t.Fatalf("format after in-band SPS: %+v %v", f, ok)
	}
	if got := tr.ParameterSets().SPS; string(got) != string(sps320x240) {
		t.Fatalf("SPS after in-band: %x", got)
	}
	// A snapshot taken earlier is not changed by later sets.
	if string(ps.SPS) != string(sps640x360) {
		t.Fatal("earlier snapshot changed")
	}
	// A single-NAL SPS works too.
	if err := w.WriteRTP(pkt(2, 3000, sps640x360)); err != nil {
		t.Fatal(err)
	}
	if f, _ := tr.VideoFormat(); f.Width != 640 {
		t.Fatalf("format after single-NAL SPS: %+v", f)
	}
}

func TestTrackParameterSetsH265(t *testing.T) {
	r := NewRegistry("n")
	c := Codec{MimeType: MimeH265, ClockRate: 90000}
	pub, err := r.Publish("s", PublisherInfo{}, []Codec{c}, &fakeSource{})
	if err != nil {
		t.Fatal(err)
	}
	w, _ := pub.Track(KindVideo)
	if _, ok := w.Track().VideoFormat(); ok {
		t.Fatal("format before any SPS")
	}
	ap := []byte{48 << 1, 1}
	for _, n := range [][]byte{vps265, sps265, pps265} {
		ap = append(ap, byte(len(n)>>8), byte(len(n)))
		ap = append(ap, n...)
	}
	sink := &recordingSink{}
	if _, err := w.Track().AddSink(sink); err != nil {
		t.Fatal(err)
	}
	// A delta picture first: the track waits for a start point.
	if err := w.WriteRTP(pkt(1, 0, []byte{1 << 1, 1, 0xaa})); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteRTP(pkt(2, 3000, ap)); err != nil {
		t.Fatal(err)
	}
	f, ok := w.Track().VideoFormat()
	if !ok || f.Width != 640 || f.Height != 360 {
		t.Fatalf("H.265 format: %+v %v", f, ok)
	}
	ps := w.Track().ParameterSets()
	if string(ps.VPS) != string(vps265) || string(ps.PPS) != string(pps265) {
		t.Fatalf("H.265 sets: %x %x", ps.VPS, ps.PPS)
	}
	got := sink.snapshot()
	if len(got) != 1 || !got[0].Keyframe {
		t.Fatalf("sink got %d packets (want the AP only, as a start point)", len(got))
	}
}

func TestH265Keyframe(t *testing.T) {
	idr := []byte{19 << 1, 1, 0xaf}
	cra := []byte{21 << 1, 1, 0xaf}
	trail := []byte{1 << 1, 1, 0xaf}
	fu := func(typ byte, start bool) []byte {
		h := typ
		if start {
			h |= 0x80
		}
		return []byte{49 << 1, 1, h, 0xaa}
	}
	ap := func(nals ...[]byte) []byte {
		out := []byte{48 << 1, 1}
		for _, n := range nals {
			out = append(out, byte(len(n)>>8), byte(len(n)))
			out = append(out, n...)
		}
		return out
	}
	cases := []struct {
		name    string
		payload []byte
		want    bool
	}{
		{"IDR", idr, true},
		{"CRA", cra, true},
		{"TRAIL", trail, false},
		{"FU IDR start", fu(19, true), true},
		{"FU IDR middle", fu(19, false), false},
		{"FU TRAIL start", fu(1, true), false},
		{"AP VPS SPS PPS IDR", ap(vps265, sps265, pps265, idr), true},
		{"AP params", ap(vps265, sps265), false},
		{"AP truncated", []byte{48 << 1, 1, 0, 9, 19 << 1}, false},
		{"short", []byte{19 << 1}, false},
	}
	for _, c := range cases {
		if got := IsKeyframe("video/H265", c.payload); got != c.want {
			t.Errorf("%s: IsKeyframe = %v, want %v", c.name, got, c.want)
		}
	}
}

func FuzzH265Keyframe(f *testing.F) {
	f.Add([]byte{48 << 1, 1, 0, 3, 19 << 1, 1, 0})
	f.Add([]byte{49 << 1, 1, 0x93})
	f.Add(sps265)
	f.Fuzz(func(t *testing.T, b []byte) {
		H265Keyframe(b)
		w := paramWatcher{h265: true}
		w.scan(b)
		w.format()
	})
}

func FuzzParamWatcherH264(f *testing.F) {
	f.Add(stapA(sps640x360, ppsX264, nalIDR))
	f.Add(sps320x240)
	f.Add([]byte{0x78, 0x00, 0x09, 0x67})
	f.Fuzz(func(t *testing.T, b []byte) {
		w := paramWatcher{h264: true}
		w.scan(b)
		w.format()
	})
}

func TestCodecSampleRateAndWebRTC(t *testing.T) {
	aacLC := Codec{MimeType: MimeAAC, ClockRate: 44100, Channels: 2,
		Fmtp: "profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3;config=1210"}
	if got := aacLC.SampleRate(); got != 44100 {
		t.Errorf("AAC-LC sample rate %d", got)
	}
	if aacLC.PlayableOverWebRTC() {
		t.Error("AAC playable over WebRTC")
	}
	if got := opus.SampleRate(); got != 48000 {
		t.Errorf("Opus sample rate %d", got)
	}
	if got := h264.SampleRate(); got != 0 {
		t.Errorf("video sample rate %d", got)
	}
	for _, c := range []Codec{h264, vp8, opus, {MimeType: "audio/pcmu", ClockRate: 8000}} {
		if !c.PlayableOverWebRTC() {
			t.Errorf("%s not playable over WebRTC", c.MimeType)
		}
	}
	if (Codec{MimeType: MimeH265}).PlayableOverWebRTC() {
		t.Error("H.265 playable over WebRTC")
	}
}

func TestWithFmtpParam(t *testing.T) {
	cases := []struct{ in, key, val, want string }{
		{"packetization-mode=1; sprop-parameter-sets=AA,BB; profile-level-id=42e01f", "sprop-parameter-sets", "CC,DD",
			"packetization-mode=1;sprop-parameter-sets=CC,DD;profile-level-id=42e01f"},
		{"packetization-mode=1", "sprop-parameter-sets", "CC", "packetization-mode=1;sprop-parameter-sets=CC"},
		{"a=1;b=2", "A", "", "b=2"},
		{"", "x", "1", "x=1"},
	}
	for _, c := range cases {
		if got := WithFmtpParam(c.in, c.key, c.val); got != c.want {
			t.Errorf("WithFmtpParam(%q, %q, %q) = %q, want %q", c.in, c.key, c.val, got, c.want)
		}
	}
}

func TestEndPublishersEndsMatchingSessions(t *testing.T) {
	r := NewRegistry("n")
	r.SetOfflineGrace(0)
	evs, mu := collectEvents(r)
	srcA, srcB := &fakeSource{}, &fakeSource{}
	pubA, err := r.Publish("a", PublisherInfo{Protocol: ProtocolRTSP, KeyID: "k1"}, []Codec{h264}, srcA)
	if err != nil {
		t.Fatal(err)
	}
	pubB, err := r.Publish("b", PublisherInfo{Protocol: ProtocolWHIP, KeyID: "k2"}, []Codec{h264}, srcB)
	if err != nil {
		t.Fatal(err)
	}
	if info := r.List()[0]; info.KeyID != "k1" || info.Protocol != ProtocolRTSP {
		t.Fatalf("info %+v", info)
	}
	n := r.EndPublishers(func(stream string, who PublisherInfo) bool { return who.KeyID == "k1" })
	if n != 1 {
		t.Fatalf("ended %d publications, want 1", n)
	}
	if pubA.Active() || srcA.closed.Load() != 1 {
		t.Fatalf("matching publication still active (%v) or its source not closed (%d)", pubA.Active(), srcA.closed.Load())
	}
	if !pubB.Active() || srcB.closed.Load() != 0 {
		t.Fatal("the other publication was touched")
	}
	mu.Lock()
	last := (*evs)[len(*evs)-1]
	mu.Unlock()
	if last.Stream != "a" || last.Live {
		t.Fatalf("last event %+v, want a offline", last)
	}
	if r.EndPublishers(func(string, PublisherInfo) bool { return false }) != 0 {
		t.Fatal("ended something without a match")
	}
}

func TestOnDemandStartsOnLookup(t *testing.T) {
	r := NewRegistry("n")
	var starts atomic.Int32
	cancel := r.OnDemand("cam", func() { starts.Add(1) })
	if _, ok := r.Lookup("cam"); ok {
		t.Fatal("found a stream nobody published")
	}
	if starts.Load() != 1 {
		t.Fatalf("%d starts after a lookup, want 1", starts.Load())
	}
	if !r.Demand("cam") || r.Demand("other") {
		t.Fatal("Demand reports the wrong registrations")
	}
	pub, err := r.Publish("cam", PublisherInfo{Protocol: ProtocolRTSPPull}, []Codec{h264}, &fakeSource{})
	if err != nil {
		t.Fatal(err)
	}
	before := starts.Load()
	if _, ok := r.Lookup("cam"); !ok {
		t.Fatal("live stream not found")
	}
	if starts.Load() != before {
		t.Fatal("a live stream's lookup asked its source to start")
	}
	pub.Close()
	// A second registration replaces the first; the first's cancel then
	// leaves it alone.
	var second atomic.Int32
	cancel2 := r.OnDemand("cam", func() { second.Add(1) })
	cancel()
	r.Demand("cam")
	if second.Load() != 1 {
		t.Fatal("the replacing registration was cancelled by the old one")
	}
	cancel2()
	if r.Demand("cam") {
		t.Fatal("cancelled registration still answers")
	}
}
