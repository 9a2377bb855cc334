package fmp4

import (
	"errors"
	"testing"
	"time"

	"github.com/backchannel/backchannel/internal/codec/h264"
	"github.com/backchannel/backchannel/internal/codec/opus"
)

func testTracks(t testing.TB) (Track, Track) {
	t.Helper()
	sps := spec(t, "6764000dacd94141fb0110000003001000000303c0f1429960")
	pps := spec(t, "68ebe3cb22c0")
	return Track{ID: 1, Codec: &H264{SPS: sps, PPS: pps}}, Track{ID: 2, Codec: &AAC{Config: []byte{0x11, 0x90}}}
}

func TestMuxerHoldsBackUntilDurationKnown(t *testing.T) {
	v, a := testTracks(t)
	m, err := NewMuxer(v, a)
	if err != nil {
		t.Fatal(err)
	}
	if tr := m.Tracks(); tr[0].TimeScale != 90000 || tr[1].TimeScale != 48000 || tr[0].Language != "und" {
		t.Fatalf("defaults not filled: %+v", tr)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(m.WriteSample(1, TimedSample{DTS: 0, PTS: 6000, Sync: true, Data: []byte{1}}))
	must(m.WriteSample(2, TimedSample{DTS: 0, PTS: 0, Duration: 1024, Data: []byte{2}}))
	// Video's only sample waits for its successor; audio's has a duration.
	b, info, err := m.Fragment(NoLimit)
	if err != nil || b == nil || len(info.Tracks) != 1 || info.Tracks[0].TrackID != 2 || m.Queued(1) != 1 {
		t.Fatalf("first fragment: %v %+v queued %d", err, info, m.Queued(1))
	}
	must(m.WriteSample(1, TimedSample{DTS: 3000, PTS: 3000, Data: []byte{3}}))
	must(m.WriteSample(1, TimedSample{DTS: 6000, PTS: 9000, Data: []byte{4}}))
	// A cut at 3000/90000 s takes only the first video sample.
	b, info, err = m.Fragment(TicksToDuration(3000, 90000))
	if err != nil || b == nil || info.SequenceNumber != 2 || len(info.Tracks) != 1 {
		t.Fatalf("cut fragment: %v %+v", err, info)
	}
	ti := info.Tracks[0]
	if ti.StartDTS != 0 || ti.EndDTS != 3000 || ti.MinPTS != 6000 || ti.Samples != 1 || !ti.StartsWithSync ||
		!info.Independent() || info.Duration() != time.Second/30 {
		t.Fatalf("info %+v", ti)
	}
	frags, err := ParseFragments(b, nil)
	if err != nil || len(frags) != 1 || frags[0].Tracks[0].Samples[0].PTS != 6000 || frags[0].Tracks[0].Samples[0].Duration != 3000 {
		t.Fatalf("read back %+v %v", frags, err)
	}
	// Nothing ready: no fragment.
	if b, info, err := m.Fragment(TicksToDuration(3000, 90000)); b != nil || info != nil || err != nil {
		t.Fatal("empty fragment emitted")
	}
	b, info, err = m.Flush()
	if err != nil || info.Tracks[0].Samples != 2 || info.Tracks[0].EndDTS != 9000 || info.Independent() {
		t.Fatalf("flush %+v %v", info, err)
	}
	frags, _ = ParseFragments(b, nil)
	if s := frags[0].Tracks[0].Samples; s[1].Duration != 3000 || s[1].IsSync() || s[1].PTS != 9000 {
		t.Fatalf("flushed samples %+v", s)
	}
}

func TestMuxerRejects(t *testing.T) {
	v, a := testTracks(t)
	m, _ := NewMuxer(v, a)
	m.MaxQueuedSamples = 3
	for _, c := range []struct {
		track uint32
		s     TimedSample
		want  error
	}{
		{9, TimedSample{Data: []byte{1}}, ErrUnknownTrack},
		{1, TimedSample{DTS: -1, Data: []byte{1}}, ErrTimestamp},
		{1, TimedSample{DTS: 0, PTS: 1 << 40, Data: []byte{1}}, ErrTimestamp},
	} {
		if err := m.WriteSample(c.track, c.s); !errors.Is(err, c.want) {
			t.Errorf("WriteSample(%d, %+v) = %v", c.track, c.s, err)
		}
	}
	if err := m.WriteSample(1, TimedSample{DTS: 10}); err == nil {
		t.Error("empty sample accepted")
	}
	for i := range 3 {
		if err := m.WriteSample(1, TimedSample{DTS: int64(10 + i), Data: []byte{1}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.WriteSample(1, TimedSample{DTS: 12, Data: []byte{1}}); !errors.Is(err, ErrTimestamp) {
		t.Errorf("repeated DTS: %v", err)
	}
	if err := m.WriteSample(1, TimedSample{DTS: 20, Data: []byte{1}}); !errors.Is(err, ErrQueueFull) {
		t.Errorf("full queue: %v", err)
	}

	head, _ := opus.NewHead(2)
	bad := []Init{
		{},
		{Tracks: []Track{{ID: 0, Codec: &Opus{Head: head}}}},
		{Tracks: []Track{{ID: 1, Codec: &Opus{Head: head}}, {ID: 1, Codec: &Opus{Head: head}}}},
		{Tracks: []Track{{ID: 1}}},
		{Tracks: []Track{{ID: 1, Codec: &Opus{}}}},
		{Tracks: []Track{{ID: 1, Codec: &Opus{Head: opus.Head{Channels: 3}}}}},
		{Tracks: []Track{{ID: 1, Codec: &Opus{Head: head}, Language: "EN"}}},
		{Tracks: []Track{{ID: 1, Codec: &AAC{Config: []byte{0x10}}}}},
		{Tracks: []Track{{ID: 1, Codec: &H264{SPS: []byte{0x68}, PPS: []byte{0x68}}}}},
		{Tracks: []Track{{ID: 1, Codec: &H264{SPS: v.Codec.(*H264).SPS}}}},
		{Tracks: []Track{{ID: 1, Codec: &H265{VPS: []byte{0x40, 1}, SPS: []byte{0x42, 1}, PPS: []byte{0x44, 1}}}}},
	}
	for i, in := range bad {
		if _, err := in.Marshal(); err == nil {
			t.Errorf("init %d accepted", i)
		}
	}
	if _, err := (&Fragment{}).Marshal(); err == nil {
		t.Error("empty fragment accepted")
	}
	if _, err := (&Fragment{Tracks: []TrackFragment{{TrackID: 1}}}).Marshal(); err == nil {
		t.Error("track without samples accepted")
	}
}

func TestSampleData(t *testing.T) {
	v, _ := testTracks(t)
	c := v.Codec.(*H264)
	aud := []byte{0x09, 0xf0}
	otherPPS := []byte{0x68, 0xee}
	idr := []byte{0x65, 0x88, 0x80}
	avcc := func(nalus ...[]byte) string { return string(h264.AppendAVCC(nil, nalus)) }
	// Copies of init's parameter sets are redundant…
	data, sync := c.SampleData([][]byte{aud, c.SPS, c.PPS, idr})
	if !sync || string(data) != string(spec(t, "00000003 658880")) {
		t.Errorf("SampleData = %x %v", data, sync)
	}
	// …unless one changed: then the sample carries all of them, because a
	// PPS equal to init's may now refer to the new SPS.
	data, _ = c.SampleData([][]byte{aud, c.SPS, c.PPS, otherPPS, idr})
	if string(data) != avcc(c.SPS, c.PPS, otherPPS, idr) {
		t.Errorf("new PPS: SampleData = %x", data)
	}
	newSPS := append(append([]byte(nil), c.SPS...), 0x80)
	data, _ = c.SampleData([][]byte{newSPS, c.PPS, idr})
	if string(data) != avcc(newSPS, c.PPS, idr) {
		t.Errorf("new SPS: SampleData = %x, the PPS must stay with it", data)
	}
	if _, sync := c.SampleData([][]byte{{0x41, 0x9a}}); sync {
		t.Error("P slice taken for sync")
	}
	h := &H265{VPS: []byte{0x40, 1}, SPS: []byte{0x42, 1}, PPS: []byte{0x44, 1}}
	data, sync = h.SampleData([][]byte{{0x46, 1, 0x50}, {0x40, 1}, {0x2a, 1, 0xaf}})
	if !sync || string(data) != string(spec(t, "00000003 2a01af")) {
		t.Errorf("H265 SampleData = %x %v", data, sync)
	}
	data, _ = h.SampleData([][]byte{{0x40, 1}, {0x42, 1, 7}, {0x44, 1}, {0x2a, 1, 0xaf}})
	if string(data) != avcc([]byte{0x40, 1}, []byte{0x42, 1, 7}, []byte{0x44, 1}, []byte{0x2a, 1, 0xaf}) {
		t.Errorf("H265 new SPS: SampleData = %x", data)
	}
}

func TestTicksToDuration(t *testing.T) {
	if TicksToDuration(90000*3600*30+45000, 90000) != 30*time.Hour+500*time.Millisecond ||
		TicksToDuration(1024, 48000) != 21333333*time.Nanosecond || TicksToDuration(5, 0) != 0 {
		t.Error("TicksToDuration wrong")
	}
	if !before(1<<40, 90000, NoLimit) || before(0, 90000, 0) || !before(89999, 90000, time.Second) || before(90000, 90000, time.Second) {
		t.Error("before wrong")
	}
}

// TestReaderVariants reads boxes the writer never makes but other muxers
// do: 64-bit and to-the-end sizes, tfdt version 0, trun version 0 without
// data offset, explicit base data offset, trex and tfhd defaults.
func TestReaderVariants(t *testing.T) {
	moof := spec(t, `
		000000a4 'moof'                              // 164 bytes, at 20
		  00000010 'mfhd' 00000000 00000003
		  0000004c 'traf'                            // track 5: explicit base offset
		    00000020 'tfhd' 00000029 00000005        // base offset, default duration, default flags
		      00000000000000ca 00000400 02000000     // base 202 (in the mdat), duration 1024, sync
		    00000010 'tfdt' 00000000 00001000        // version 0: 4096
		    00000014 'trun' 00000200 00000001 00000003 // v0, sizes only, no data offset: 1 sample of 3 bytes
		  00000040 'traf'                            // track 6: trex defaults, first-sample flags
		    00000010 'tfhd' 00020000 00000006        // default-base-is-moof
		    00000010 'tfdt' 00000000 00000000
		    00000018 'trun' 00000005 00000002 000000ac 02000000 // 2 samples at moof+172; first sample flags
		0000001c 'mdat' 0000000000 0a0b0c0d0e 0f1011 00000000000000 // at 184, payload at 192
	`)
	file := append(spec(t, "00000001 'free' 0000000000000014 00000000"), moof...)
	file = append(file, spec(t, "00000000 'skip' 01020304")...) // size 0: to the end
	boxes, err := ReadBoxes(file)
	if err != nil || len(boxes) != 4 || boxes[0].Size != 20 || boxes[3].Type != "skip" || len(boxes[3].Payload) != 4 {
		t.Fatalf("boxes %+v %v", boxes, err)
	}
	frags, err := ParseFragments(file, map[uint32]TrackDefaults{6: {Duration: 960, Size: 5, Flags: 0x01010000}})
	if err != nil || len(frags) != 1 || frags[0].SequenceNumber != 3 || len(frags[0].Tracks) != 2 {
		t.Fatalf("%+v %v", frags, err)
	}
	t5 := frags[0].Tracks[0]
	if t5.TrackID != 5 || t5.Samples[0].DTS != 4096 || t5.Samples[0].Duration != 1024 ||
		string(t5.Samples[0].Data) != "\x0f\x10\x11" || !t5.Samples[0].IsSync() {
		t.Errorf("track 5 %+v", t5)
	}
	t6 := frags[0].Tracks[1]
	if len(t6.Samples) != 2 || string(t6.Samples[0].Data) != "\x00\x00\x00\x00\x00" ||
		string(t6.Samples[1].Data) != "\x0a\x0b\x0c\x0d\x0e" || !t6.Samples[0].IsSync() || t6.Samples[1].IsSync() ||
		t6.Samples[1].DTS != 960 {
		t.Errorf("track 6 %+v", t6)
	}
}

func TestParseInitAndCodecs(t *testing.T) {
	v, a := testTracks(t)
	head, _ := opus.NewHead(2)
	o := Track{ID: 7, Codec: &Opus{Head: head}, Language: "eng"}
	m, err := NewMuxer(v, a, o)
	if err != nil {
		t.Fatal(err)
	}
	if got := Codecs(m.Tracks()); got != "avc1.64000d,mp4a.40.2,opus" {
		t.Errorf("Codecs = %q", got)
	}
	init, _ := m.Init()
	tracks, err := ParseInit(init)
	if err != nil || len(tracks) != 3 {
		t.Fatalf("%+v %v", tracks, err)
	}
	want := []InitTrack{
		{ID: 1, TimeScale: 90000, Handler: "vide", SampleEntry: "avc1", Language: "und", Width: 320, Height: 240},
		{ID: 2, TimeScale: 48000, Handler: "soun", SampleEntry: "mp4a", Language: "und"},
		{ID: 7, TimeScale: 48000, Handler: "soun", SampleEntry: "Opus", Language: "eng"},
	}
	for i := range want {
		if tracks[i] != want[i] {
			t.Errorf("track %d: %+v, want %+v", i, tracks[i], want[i])
		}
	}
	if ftyp, ok := Find(init, "ftyp"); !ok || string(ftyp.Payload[:4]) != "iso6" {
		t.Error("no ftyp")
	}
	if mvhd, ok := Find(init, "moov", "mvhd"); !ok || mvhd.Payload[len(mvhd.Payload)-1] != 8 {
		t.Error("next_track_ID is not 8")
	}
	if _, err := ParseInit([]byte("\x00\x00\x00\x08free")); err == nil {
		t.Error("init without moov accepted")
	}
	if s := v.Codec.(*H264).ParsedSPS(); s == nil || s.Width != 320 {
		t.Errorf("ParsedSPS %+v", s)
	}
	if (&H264{}).CodecString() != "avc1" || (&H265{}).ParsedSPS() != nil || (&H265{}).CodecString() != "hvc1" {
		t.Error("codec strings of empty configurations")
	}
}
