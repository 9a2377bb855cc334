package control

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestDecodeClientMessages(t *testing.T) {
	m, err := DecodeClient([]byte(`{"t":"hello","token":"abc","ua":"Mozilla","lang":"pt-BR","screen":{"w":1920,"h":1080,"dpr":2},"net":{"type":"wifi","effective":"4g","downlink":10,"rtt":50},"future":1}`))
	if err != nil || m.Type != TypeHello || m.Hello.Token != "abc" || m.Hello.Screen.W != 1920 || m.Hello.Net.Effective != "4g" {
		t.Fatalf("hello: %+v %v", m, err)
	}
	m, err = DecodeClient([]byte(`{"t":"watch","stream":"demo"}`))
	if err != nil || m.Watch.Stream != "demo" {
		t.Fatalf("watch: %+v %v", m, err)
	}
	m, err = DecodeClient([]byte(`{"t":"telemetry","sn":3,"iv":5000,"sta":"p","bl":1200,"mtp":5400,"pb":2500,"ltc":900,"msd":640,
		"play_ms":4800,"rb_n":1,"rb_ms":200,"dfa":0,"err":["E1"],"rtc":{"frz_n":1,"frz_ms":150,"loss":0.01,"jbd_ms":40,"rtt_ms":30}}`))
	if err != nil {
		t.Fatal(err)
	}
	tl := m.Telemetry
	if tl.SN != 3 || tl.IV != 5000 || *tl.BL != 1200 || *tl.MSD != 640 || tl.RbMS != 200 || *tl.RTC.Loss != 0.01 || tl.Err[0] != "E1" {
		t.Fatalf("telemetry: %+v", tl)
	}
	if tl.LTC == nil || m.Telemetry.RTC.RttMS == nil {
		t.Fatal("gauges lost")
	}
	m, err = DecodeClient([]byte(`{"t":"telemetry","sn":4,"iv":5000,"play_ms":5000,"rb_n":0,"rb_ms":0,"dfa":0}`))
	if err != nil || m.Telemetry.BL != nil || m.Telemetry.RTC != nil {
		t.Fatalf("unmeasured gauges should stay nil: %+v %v", m.Telemetry, err)
	}
	m, err = DecodeClient([]byte(`{"t":"vote","poll":"p1","choice":2,"id":"v1"}`))
	if err != nil || m.Vote.Choice != 2 {
		t.Fatalf("vote: %+v %v", m, err)
	}
	m, err = DecodeClient([]byte(`{"t":"resume","sid":"s1","offsets":{"stream:demo":4}}`))
	if err != nil || m.Resume.Offsets["stream:demo"] != 4 {
		t.Fatalf("resume: %+v %v", m, err)
	}
}

func TestDecodeClientRejects(t *testing.T) {
	cases := []struct {
		frame string
		want  error
		code  int
	}{
		{`not json`, ErrMalformed, CloseInvalidPayload},
		{`[1,2]`, ErrMalformed, CloseInvalidPayload},
		{`null`, ErrMalformed, CloseInvalidPayload},
		{`{"stream":"x"}`, ErrMalformed, CloseInvalidPayload},
		{`{"t":5}`, ErrMalformed, CloseInvalidPayload},
		{`{"t":"dance"}`, ErrUnknownType, CloseUnknownType},
		{`{"t":"watch"}`, ErrMalformed, CloseInvalidPayload},
		{`{"t":"watch","stream":7}`, ErrMalformed, CloseInvalidPayload},
		{`{"t":"hello","screen":"big"}`, ErrMalformed, CloseInvalidPayload},
		{`{"t":"telemetry","sn":-1,"iv":5000}`, ErrMalformed, CloseInvalidPayload},
		{`{"t":"telemetry","sn":1}`, ErrMalformed, CloseInvalidPayload},
		{`{"t":"telemetry","sn":1,"iv":5000,"rtc":{"loss":2}}`, ErrMalformed, CloseInvalidPayload},
		{`{"t":"telemetry","sn":1,"iv":5000,"rb_ms":-5}`, ErrMalformed, CloseInvalidPayload},
		{`{"t":"telemetry","sn":1,"iv":5000,"bl":"full"}`, ErrMalformed, CloseInvalidPayload},
		{`{"t":"vote","poll":"p","choice":"a","id":"v"}`, ErrMalformed, CloseInvalidPayload},
		{`{"t":"vote","poll":"p","choice":1}`, ErrMalformed, CloseInvalidPayload},
		{`{"t":"watch","stream":"a"} trailing`, ErrMalformed, CloseInvalidPayload},
		{`{"t":"watch","stream":"` + strings.Repeat("a", MaxFrame) + `"}`, ErrFrameTooBig, CloseTooBig},
	}
	for _, c := range cases {
		_, err := DecodeClient([]byte(c.frame))
		if !errors.Is(err, c.want) {
			t.Errorf("%.60s: error %v, want %v", c.frame, err, c.want)
			continue
		}
		if got := CloseCodeFor(err); got != c.code {
			t.Errorf("%.60s: close code %d, want %d", c.frame, got, c.code)
		}
	}
}

func TestEncode(t *testing.T) {
	got := string(Encode(Welcome{Sid: "s1", UID: "u1", Token: "tok"}))
	if got != `{"t":"welcome","sid":"s1","uid":"u1","token":"tok"}` {
		t.Fatalf("welcome %s", got)
	}
	got = string(WithSeq(Encode(Endpoint{Stream: "demo", WHEP: "/whep/demo", Edge: "e1"}), 7))
	if got != `{"t":"endpoint","stream":"demo","whep":"/whep/demo","hls":"","edge":"e1","seq":7}` {
		t.Fatalf("endpoint %s", got)
	}
	got = string(EncodeGroup(StreamStatus{Stream: "demo", State: StateLive}, "stream:demo", 3, "ep1"))
	if got != `{"t":"stream-status","g":"stream:demo","off":3,"ep":"ep1","stream":"demo","state":"live"}` {
		t.Fatalf("group %s", got)
	}
	var v map[string]any
	if err := json.Unmarshal(WithSeq([]byte(`{}`), 1), &v); err != nil || v["seq"] != float64(1) {
		t.Fatalf("WithSeq on {}: %v %v", v, err)
	}
}

func FuzzDecodeClient(f *testing.F) {
	for _, s := range []string{
		`{"t":"hello","token":"x","ua":"u","lang":"en","screen":{"w":1,"h":2},"net":{"type":"wifi"}}`,
		`{"t":"watch","stream":"demo"}`,
		`{"t":"telemetry","sn":1,"iv":5000,"sta":"p","bl":1,"rtc":{"frz_n":1,"loss":0.5}}`,
		`{"t":"vote","poll":"p","choice":1,"id":"v"}`,
		`{"t":"resume","sid":"s","offsets":{"g":1}}`,
		`{"t":"x"}`, `{`, `{"t":null}`, `{"t":"telemetry","iv":1e400}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		m, err := DecodeClient(frame)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnknownType) && !errors.Is(err, ErrFrameTooBig) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		set := 0
		for _, p := range []bool{m.Hello != nil, m.Watch != nil, m.Telemetry != nil, m.Vote != nil, m.Resume != nil} {
			if p {
				set++
			}
		}
		if set != 1 {
			t.Fatalf("%d payloads set for %q", set, frame)
		}
		if m.Telemetry != nil && (m.Telemetry.IV <= 0 || m.Telemetry.RbMS < 0) {
			t.Fatalf("accepted out-of-range telemetry %q", frame)
		}
	})
}
