package media

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

var (
	h264 = Codec{MimeType: MimeH264, ClockRate: 90000, Fmtp: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"}
	vp8  = Codec{MimeType: MimeVP8, ClockRate: 90000}
	opus = Codec{MimeType: MimeOpus, ClockRate: 48000, Channels: 2, Fmtp: "minptime=10;useinbandfec=1"}
)

type fakeSource struct {
	keyframes atomic.Int32
	closed    atomic.Int32
}

func (f *fakeSource) RequestKeyframe(Kind) { f.keyframes.Add(1) }
func (f *fakeSource) Close() error         { f.closed.Add(1); return nil }

type recordingSink struct {
	mu       sync.Mutex
	packets  []Packet
	reports  []SenderReport
	detached error
	nDetach  int
}

func (s *recordingSink) WriteRTP(p *Packet) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cp := *p
	cp.Payload = append([]byte(nil), p.Payload...)
	s.packets = append(s.packets, cp)
}

func (s *recordingSink) WriteSenderReport(sr SenderReport) {
	s.mu.Lock()
	s.reports = append(s.reports, sr)
	s.mu.Unlock()
}

func (s *recordingSink) Detached(err error) {
	s.mu.Lock()
	s.detached = err
	s.nDetach++
	s.mu.Unlock()
}

func (s *recordingSink) detachState() (error, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.detached, s.nDetach
}

func (s *recordingSink) snapshot() []Packet {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Packet(nil), s.packets...)
}

func pkt(seq uint16, ts uint32, payload []byte) *rtp.Packet {
	return &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: ts, SSRC: 0xdead, PayloadType: 102,
		Extension: true, Extensions: []rtp.Extension{}}, Payload: payload}
}

func collectEvents(r *Registry) (*[]Event, *sync.Mutex) {
	var mu sync.Mutex
	var evs []Event
	r.Subscribe(func(e Event) {
		mu.Lock()
		evs = append(evs, e)
		mu.Unlock()
	})
	return &evs, &mu
}

func TestPublishGoesLiveAndCloseGoesOffline(t *testing.T) {
	r := NewRegistry("node-1")
	r.SetOfflineGrace(0)
	evs, mu := collectEvents(r)
	src := &fakeSource{}
	pub, err := r.Publish("cup", PublisherInfo{Protocol: "whip", Remote: "10.0.0.1:5000"}, []Codec{h264, opus}, src)
	if err != nil {
		t.Fatal(err)
	}
	s, ok := r.Lookup("cup")
	if !ok || !s.Live() {
		t.Fatal("stream not live after Publish")
	}
	list := r.List()
	if len(list) != 1 || list[0].Name != "cup" || list[0].Node != "node-1" || list[0].Protocol != "whip" ||
		list[0].Publisher != "10.0.0.1:5000" || len(list[0].Tracks) != 2 || list[0].Tracks[0].Codec != MimeH264 ||
		list[0].Tracks[1].Channels != 2 || list[0].StartedAt.IsZero() {
		t.Fatalf("List = %+v", list)
	}
	pub.Close()
	if s.Live() {
		t.Fatal("stream still live after Close")
	}
	if _, ok := r.Lookup("cup"); ok {
		t.Fatal("stream kept without grace")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(*evs) != 2 || !(*evs)[0].Live || (*evs)[1].Live || (*evs)[0].Stream != "cup" || len((*evs)[0].Info.Tracks) != 2 {
		t.Fatalf("events = %+v", *evs)
	}
	if src.closed.Load() != 0 {
		t.Fatal("Source.Close called for a publisher that left by itself")
	}
}

func TestPublishValidatesTracks(t *testing.T) {
	r := NewRegistry("n")
	src := &fakeSource{}
	for name, codecs := range map[string][]Codec{
		"none":      nil,
		"two video": {h264, vp8},
		"no kind":   {{MimeType: "text/plain", ClockRate: 1}},
		"no clock":  {{MimeType: MimeOpus}},
	} {
		if _, err := r.Publish("s", PublisherInfo{}, codecs, src); err == nil {
			t.Errorf("%s: Publish accepted", name)
		}
	}
	if _, err := r.Publish("s", PublisherInfo{}, []Codec{h264}, nil); err == nil {
		t.Error("Publish accepted a nil source")
	}
}

func TestFanOutMungesHeaderAndKeepsPayload(t *testing.T) {
	r := NewRegistry("n")
	pub, _ := r.Publish("s", PublisherInfo{}, []Codec{h264}, &fakeSource{})
	w, _ := pub.Track(KindVideo)
	tr := w.Track()
	a, b := &recordingSink{}, &recordingSink{}
	if _, err := tr.AddSink(a); err != nil {
		t.Fatal(err)
	}
	removeB, _ := tr.AddSink(b)
	if tr.SinkCount() != 2 {
		t.Fatalf("SinkCount = %d", tr.SinkCount())
	}

	// Deltas before the first keyframe are useless to decoders: dropped.
	_ = w.WriteRTP(pkt(10, 1000, nalSlice))
	frames := [][]byte{stapA(nalSPS, nalPPS), nalIDR, nalSlice, nalSlice}
	tss := []uint32{4000, 4000, 7000, 10000}
	for i, f := range frames {
		p := pkt(uint16(11+i), tss[i], f)
		p.Marker = i > 0
		if err := w.WriteRTP(p); err != nil {
			t.Fatal(err)
		}
	}
	removeB()
	removeB() // idempotent
	_ = w.WriteRTP(pkt(15, 13000, nalSlice))

	got := a.snapshot()
	if len(got) != 5 {
		t.Fatalf("sink a got %d packets, want 5", len(got))
	}
	if len(b.snapshot()) != 4 {
		t.Fatalf("removed sink got %d packets, want 4", len(b.snapshot()))
	}
	first := got[0].Header
	for i, p := range got {
		if p.Header.SSRC != tr.SSRC() || p.Header.SSRC == 0xdead {
			t.Fatalf("packet %d SSRC %x, want track SSRC %x", i, p.Header.SSRC, tr.SSRC())
		}
		if p.Header.SequenceNumber != first.SequenceNumber+uint16(i) {
			t.Fatalf("packet %d seq %d not continuous", i, p.Header.SequenceNumber)
		}
		if p.Header.Extension || len(p.Header.Extensions) != 0 {
			t.Fatalf("packet %d kept publisher header extensions", i)
		}
		if p.Header.PayloadType != 102 {
			t.Fatalf("payload type changed at stream level")
		}
	}
	if !got[0].Keyframe || got[1].Keyframe || got[2].Keyframe {
		t.Fatalf("keyframe flags = %v %v %v, want only the SPS packet", got[0].Keyframe, got[1].Keyframe, got[2].Keyframe)
	}
	if !bytes.Equal(got[1].Payload, nalIDR) || got[2].Header.Timestamp-got[0].Header.Timestamp != 3000 {
		t.Fatal("payload or timestamp spacing altered")
	}
	if k, ok := tr.LastKeyframe(); !ok || k.SequenceNumber != first.SequenceNumber {
		t.Fatalf("LastKeyframe = %+v %v", k, ok)
	}
	// The shared ring serves retransmissions of what went out.
	if !tr.Retransmit(got[1].Header.SequenceNumber, func(p *Packet) {
		if !bytes.Equal(p.Payload, nalIDR) {
			t.Error("retransmitted payload differs")
		}
	}) {
		t.Fatal("Retransmit missed a recent packet")
	}
}

func TestTakeoverKeepsSinksAndContinuity(t *testing.T) {
	r := NewRegistry("n")
	evs, mu := collectEvents(r)
	srcA := &fakeSource{}
	pubA, _ := r.Publish("s", PublisherInfo{Remote: "a"}, []Codec{h264, opus}, srcA)
	video, _ := pubA.Track(KindVideo)
	audio, _ := pubA.Track(KindAudio)
	vs, as := &recordingSink{}, &recordingSink{}
	video.Track().AddSink(vs)
	audio.Track().AddSink(as)
	for i := range 5 {
		_ = video.WriteRTP(pkt(uint16(100+i), uint32(3000*i), stapA(nalSPS, nalPPS, nalIDR)))
		_ = audio.WriteRTP(pkt(uint16(500+i), uint32(960*i), []byte{0xfc, byte(i)}))
	}

	srcB := &fakeSource{}
	pubB, err := r.Publish("s", PublisherInfo{Remote: "b"}, []Codec{h264, opus}, srcB)
	if err != nil {
		t.Fatal(err)
	}
	if srcA.closed.Load() != 1 {
		t.Fatal("replaced publisher's source not closed")
	}
	if pubA.Active() || !pubB.Active() {
		t.Fatal("Active flags wrong after takeover")
	}
	if err := video.WriteRTP(pkt(105, 15000, nalSlice)); !errors.Is(err, ErrReplaced) {
		t.Fatalf("old publisher write = %v, want ErrReplaced", err)
	}
	pubA.Close() // late Close of the replaced publisher: no effect
	if s, _ := r.Lookup("s"); !s.Live() {
		t.Fatal("late Close of the replaced publisher took the stream offline")
	}

	time.Sleep(20 * time.Millisecond)
	video2, _ := pubB.Track(KindVideo)
	audio2, _ := pubB.Track(KindAudio)
	if video2.Track() != video.Track() {
		t.Fatal("takeover created a new track")
	}
	// The new publisher's numbering is unrelated and starts mid-GOP.
	_ = video2.WriteRTP(pkt(40000, 7_000_000, nalSlice))
	for i := range 3 {
		_ = video2.WriteRTP(pkt(uint16(40001+i), uint32(7_003_000+3000*i), stapA(nalSPS, nalPPS, nalIDR)))
		_ = audio2.WriteRTP(pkt(uint16(9+i), uint32(123+960*i), []byte{0xfc, byte(i)}))
	}
	// A report from before the publisher's first packet has no timing.
	if err := audio2.WriteSenderReport(&rtcp.SenderReport{NTPTime: 76, RTPTime: 999}); err != nil {
		t.Fatal(err)
	}
	if err := audio2.WriteSenderReport(&rtcp.SenderReport{NTPTime: 77, RTPTime: 123 + 480, PacketCount: 3}); err != nil {
		t.Fatal(err)
	}

	for name, sink := range map[string]*recordingSink{"video": vs, "audio": as} {
		got := sink.snapshot()
		if len(got) != 8 {
			t.Fatalf("%s sink got %d packets, want 8", name, len(got))
		}
		for i := 1; i < len(got); i++ {
			if got[i].Header.SequenceNumber != got[i-1].Header.SequenceNumber+1 {
				t.Fatalf("%s: seq gap at %d: %d then %d", name, i, got[i-1].Header.SequenceNumber, got[i].Header.SequenceNumber)
			}
			if got[i].Header.SSRC != got[0].Header.SSRC {
				t.Fatalf("%s: SSRC changed", name)
			}
			if d := got[i].Header.Timestamp - got[i-1].Header.Timestamp; d == 0 || d > 1<<31 {
				t.Fatalf("%s: timestamp did not advance at %d", name, i)
			}
		}
		if sink.nDetach != 0 {
			t.Fatalf("%s sink detached by a compatible takeover", name)
		}
	}
	// Across the switch the timestamp advanced by about the wall-clock gap.
	got := as.snapshot()
	if d := got[5].Header.Timestamp - got[4].Header.Timestamp; d < 48000*20/1000 || d > 48000 {
		t.Fatalf("audio timestamp jump across takeover = %d ticks, want ≈ 20 ms+", d)
	}
	as.mu.Lock()
	if len(as.reports) != 1 || as.reports[0].RTPTime != got[5].Header.Timestamp+480 || as.reports[0].NTPTime != 77 {
		t.Fatalf("sender report = %+v, want RTP time %d", as.reports, got[5].Header.Timestamp+480)
	}
	as.mu.Unlock()

	mu.Lock()
	defer mu.Unlock()
	for _, e := range *evs {
		if !e.Live {
			t.Fatalf("takeover produced an offline event: %+v", *evs)
		}
	}
	if len(*evs) != 2 || (*evs)[1].Info.Publisher != "b" {
		t.Fatalf("events = %+v, want two live events, the second for publisher b", *evs)
	}
}

func TestTakeoverWithOtherCodecDetachesSinks(t *testing.T) {
	r := NewRegistry("n")
	pubA, _ := r.Publish("s", PublisherInfo{}, []Codec{h264, opus}, &fakeSource{})
	v, _ := pubA.Track(KindVideo)
	a, _ := pubA.Track(KindAudio)
	vs, as := &recordingSink{}, &recordingSink{}
	v.Track().AddSink(vs)
	a.Track().AddSink(as)

	pubB, err := r.Publish("s", PublisherInfo{}, []Codec{vp8, opus}, &fakeSource{})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(vs.detached, ErrCodecChanged) || vs.nDetach != 1 {
		t.Fatalf("video sink detach = %v (%d)", vs.detached, vs.nDetach)
	}
	if as.nDetach != 0 {
		t.Fatal("audio sink detached though its codec did not change")
	}
	v2, _ := pubB.Track(KindVideo)
	if !v2.Track().Codec().Is(MimeVP8) || v2.Track().SinkCount() != 0 {
		t.Fatal("track codec not switched or sinks kept")
	}
	// H.264 profile changes alone are compatible.
	p1 := Codec{MimeType: MimeH264, ClockRate: 90000, Fmtp: "packetization-mode=1;profile-level-id=42e01f"}
	p2 := Codec{MimeType: "video/h264", ClockRate: 90000, Fmtp: "profile-level-id=640c1f;packetization-mode=1"}
	p0 := Codec{MimeType: MimeH264, ClockRate: 90000, Fmtp: "profile-level-id=42e01f"}
	if !p1.Compatible(p2) || p1.Compatible(p0) || p1.Compatible(vp8) || opus.Compatible(Codec{MimeType: MimeOpus, ClockRate: 48000, Channels: 1}) {
		t.Fatal("Compatible rules wrong")
	}
}

func TestOfflineGraceKeepsSinksUntilExpiry(t *testing.T) {
	r := NewRegistry("n")
	r.SetOfflineGrace(150 * time.Millisecond)
	evs, mu := collectEvents(r)
	pub, _ := r.Publish("s", PublisherInfo{}, []Codec{opus}, &fakeSource{})
	a, _ := pub.Track(KindAudio)
	sink := &recordingSink{}
	a.Track().AddSink(sink)
	_ = a.WriteRTP(pkt(1, 1, []byte{1}))
	pub.Close()
	if err := a.WriteRTP(pkt(2, 961, []byte{2})); !errors.Is(err, ErrReplaced) {
		t.Fatalf("write after Close = %v", err)
	}
	s, ok := r.Lookup("s")
	if !ok || s.Live() || s.Ended() {
		t.Fatal("stream should be offline but kept during grace")
	}
	if len(r.List()) != 0 {
		t.Fatal("offline stream listed")
	}
	// A publisher returning in time continues the same track for the sink.
	pub2, _ := r.Publish("s", PublisherInfo{}, []Codec{opus}, &fakeSource{})
	a2, _ := pub2.Track(KindAudio)
	_ = a2.WriteRTP(pkt(700, 5, []byte{3}))
	got := sink.snapshot()
	if len(got) != 2 || got[1].Header.SequenceNumber != got[0].Header.SequenceNumber+1 {
		t.Fatalf("sink after return got %+v", got)
	}
	pub2.Close()
	time.Sleep(300 * time.Millisecond)
	if err, _ := sink.detachState(); !errors.Is(err, ErrStreamEnded) {
		t.Fatalf("sink not detached after grace: %v", err)
	}
	if _, ok := r.Lookup("s"); ok {
		t.Fatal("stream kept after grace")
	}
	if _, err := a2.Track().AddSink(&recordingSink{}); !errors.Is(err, ErrStreamEnded) {
		t.Fatalf("AddSink on ended stream = %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	var states []bool
	for _, e := range *evs {
		states = append(states, e.Live)
	}
	if len(states) != 4 || !states[0] || states[1] || !states[2] || states[3] {
		t.Fatalf("event sequence = %v, want live, offline, live, offline", states)
	}
}

func TestKeyframeRequestsAreRateLimited(t *testing.T) {
	r := NewRegistry("n")
	src := &fakeSource{}
	pub, _ := r.Publish("s", PublisherInfo{}, []Codec{h264, opus}, src)
	v, _ := pub.Track(KindVideo)
	a, _ := pub.Track(KindAudio)
	if a.Track().RequestKeyframe() {
		t.Fatal("audio track requested a keyframe")
	}
	sent := 0
	for range 50 {
		if v.Track().RequestKeyframe() {
			sent++
		}
	}
	if sent != 1 || src.keyframes.Load() != 1 {
		t.Fatalf("burst sent %d now, source saw %d; want 1", sent, src.keyframes.Load())
	}
	// The folded requests become one trailing request after the interval.
	time.Sleep(KeyframeRequestInterval + 150*time.Millisecond)
	if n := src.keyframes.Load(); n != 2 {
		t.Fatalf("after interval source saw %d requests, want 2", n)
	}
	time.Sleep(KeyframeRequestInterval + 100*time.Millisecond)
	if n := src.keyframes.Load(); n != 2 {
		t.Fatalf("idle interval produced requests: %d", n)
	}

	// A keyframe leaving after a folded request satisfies it.
	v.Track().RequestKeyframe() // sent (interval elapsed)
	v.Track().RequestKeyframe() // folded
	_ = v.WriteRTP(pkt(1, 1, stapA(nalSPS, nalPPS, nalIDR)))
	time.Sleep(KeyframeRequestInterval + 150*time.Millisecond)
	if n := src.keyframes.Load(); n != 3 {
		t.Fatalf("folded request not cancelled by keyframe: %d requests", n)
	}
	r.Close()
}

func TestRegistryCloseEndsStreams(t *testing.T) {
	r := NewRegistry("n")
	evs, mu := collectEvents(r)
	pub, _ := r.Publish("s", PublisherInfo{}, []Codec{opus}, &fakeSource{})
	a, _ := pub.Track(KindAudio)
	sink := &recordingSink{}
	a.Track().AddSink(sink)
	r.Close()
	if !errors.Is(sink.detached, ErrStreamEnded) {
		t.Fatal("sink not detached on Close")
	}
	if _, err := r.Publish("s", PublisherInfo{}, []Codec{opus}, &fakeSource{}); err == nil {
		t.Fatal("Publish after Close succeeded")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(*evs) != 2 || (*evs)[1].Live {
		t.Fatalf("events = %+v", *evs)
	}
}

func TestSubscriberMayReenterRegistry(t *testing.T) {
	r := NewRegistry("n")
	r.SetOfflineGrace(0)
	var order []string
	cancel := r.Subscribe(func(e Event) {
		order = append(order, fmt.Sprintf("%s:%v", e.Stream, e.Live))
		if e.Stream == "s" && e.Live {
			// Publishing from inside a callback queues its event behind
			// this one instead of deadlocking or jumping ahead.
			if _, err := r.Publish("inner", PublisherInfo{}, []Codec{opus}, &fakeSource{}); err != nil {
				t.Error(err)
			}
			if _, ok := r.Lookup("inner"); !ok {
				t.Error("inner stream not registered")
			}
		}
	})
	pub, _ := r.Publish("s", PublisherInfo{}, []Codec{opus}, &fakeSource{})
	pub.Close()
	cancel()
	_, _ = r.Publish("t", PublisherInfo{}, []Codec{opus}, &fakeSource{})
	if got := strings.Join(order, " "); got != "s:true inner:true s:false" {
		t.Fatalf("events = %q", got)
	}
}

func BenchmarkTrackWriteFanOut(b *testing.B) {
	r := NewRegistry("n")
	pub, _ := r.Publish("s", PublisherInfo{}, []Codec{opus}, &fakeSource{})
	w, _ := pub.Track(KindAudio)
	for range 100 {
		w.Track().AddSink(nopSink{})
	}
	p := pkt(0, 0, make([]byte, 1000))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		p.SequenceNumber = uint16(i)
		p.Timestamp = uint32(960 * i)
		_ = w.WriteRTP(p)
	}
}

type nopSink struct{}

func (nopSink) WriteRTP(*Packet)               {}
func (nopSink) WriteSenderReport(SenderReport) {}
func (nopSink) Detached(error)                 {}

// The first keyframe's parameter sets arriving behind its first slice (a
// reordering seen with pion's ICE when several local candidates share one
// socket) still reach the sinks, in their sequence place: without them the
// viewers could not decode until the next keyframe.
func TestParameterSetsReorderedBehindTheFirstKeyframe(t *testing.T) {
	r := NewRegistry("n")
	pub, _ := r.Publish("s", PublisherInfo{}, []Codec{h264}, &fakeSource{})
	w, _ := pub.Track(KindVideo)
	a := &recordingSink{}
	if _, err := w.Track().AddSink(a); err != nil {
		t.Fatal(err)
	}
	idr := pkt(21, 4000, nalIDR)
	idr.Marker = true
	for _, p := range []*rtp.Packet{idr, pkt(20, 4000, stapA(nalSPS, nalPPS)), pkt(22, 7000, nalSlice)} {
		if err := w.WriteRTP(p); err != nil {
			t.Fatal(err)
		}
	}
	got := a.snapshot()
	if len(got) != 3 {
		t.Fatalf("sink got %d packets, want 3", len(got))
	}
	if !got[0].Keyframe || !bytes.Equal(got[1].Payload, stapA(nalSPS, nalPPS)) {
		t.Fatalf("first packets %+v %+v: want the IDR (the start), then the parameter sets", got[0], got[1])
	}
	if got[1].Header.SequenceNumber != got[0].Header.SequenceNumber-1 || got[2].Header.SequenceNumber != got[0].Header.SequenceNumber+1 {
		t.Fatalf("sequence numbers %d %d %d: the parameter sets must keep their place before the IDR",
			got[0].Header.SequenceNumber, got[1].Header.SequenceNumber, got[2].Header.SequenceNumber)
	}
}
