package aac

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strconv"
	"testing"

	"github.com/backchannel/backchannel/internal/codec/internal/mediatest"
)

func TestConfigKnownBytes(t *testing.T) {
	for _, c := range []struct {
		hex  string
		want Config
		// The fields, bit by bit.
		layout string
	}{
		{"1190", Config{ObjectType: 2, SampleRate: 48000, ChannelConfig: 2},
			"00010 AAC-LC | 0011 48000 | 0010 stereo | 0 1024 | 0 | 0 | 000 pad"},
		{"1210", Config{ObjectType: 2, SampleRate: 44100, ChannelConfig: 2},
			"00010 | 0100 44100 | 0010 | 000 | 000 pad"},
		{"128c", Config{ObjectType: 2, SampleRate: 32000, ChannelConfig: 1, FrameLength960: true},
			"00010 | 0101 32000 | 0001 mono | 1 960 | 0 | 0 | 0000 pad"},
		{"1780c35008", Config{ObjectType: 2, SampleRate: 100000, ChannelConfig: 1},
			"00010 | 1111 explicit | 000000011000011010100000 = 100000 | 0001 | 000"},
		{"2b118800", Config{ObjectType: 5, SampleRate: 24000, ChannelConfig: 2, ExtensionSampleRate: 48000, CoreObjectType: 2},
			"00101 SBR | 0110 24000 | 0010 | 0011 48000 | 00010 core LC | 000 | pad"},
		{"f8fe2000", Config{ObjectType: 39, SampleRate: 48000, ChannelConfig: 1},
			"11111 escape | 000111 32+7=39 ELD ... not a GA type"},
	} {
		b, _ := hex.DecodeString(c.hex)
		var got Config
		err := got.Unmarshal(b)
		if c.want.ObjectType == 39 {
			if err == nil {
				t.Errorf("%s: ELD (no GASpecificConfig) accepted", c.hex)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s (%s): got %+v, %v", c.hex, c.layout, got, err)
			continue
		}
		enc, err := c.want.Marshal()
		if err != nil || !bytes.Equal(enc, b) {
			t.Errorf("Marshal(%+v) = %x, %v; want %s", c.want, enc, err, c.hex)
		}
	}
	lc := Config{ObjectType: 2, SampleRate: 48000, ChannelConfig: 7}
	if lc.Channels() != 8 || lc.SamplesPerFrame() != 1024 || lc.CodecString() != "mp4a.40.2" {
		t.Errorf("helpers: %d %d %s", lc.Channels(), lc.SamplesPerFrame(), lc.CodecString())
	}
	he := Config{ObjectType: 5, CoreObjectType: 2, FrameLength960: true}
	if he.CodecString() != "mp4a.40.5" || he.SamplesPerFrame() != 960 {
		t.Error("HE-AAC helpers wrong")
	}
	if ld := (Config{ObjectType: ObjectTypeAACLD}); ld.SamplesPerFrame() != 512 {
		t.Error("AAC-LD frame length")
	}
}

func TestConfigRejects(t *testing.T) {
	for _, h := range []string{"", "12", "1080", "1600", "17800000", "0000"} {
		b, _ := hex.DecodeString(h)
		var c Config
		if err := c.Unmarshal(b); !errors.Is(err, ErrConfig) {
			t.Errorf("Unmarshal(%s) = %+v, %v", h, c, err)
		}
	}
	for _, c := range []Config{{}, {ObjectType: 2, SampleRate: 48000}, {ObjectType: 5, SampleRate: 24000, ChannelConfig: 2}} {
		if _, err := c.Marshal(); err == nil {
			t.Errorf("Marshal(%+v) accepted", c)
		}
	}
}

func FuzzConfig(f *testing.F) {
	for _, h := range []string{"1190", "1210", "1780c35008", "2b118800"} {
		b, _ := hex.DecodeString(h)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var c Config
		if c.Unmarshal(b) != nil {
			return
		}
		enc, err := c.Marshal()
		if err != nil {
			t.Fatalf("parsed %+v does not encode: %v", c, err)
		}
		var again Config
		if err := again.Unmarshal(enc); err != nil || again != c {
			t.Fatalf("round trip %+v -> %x -> %+v, %v", c, enc, again, err)
		}
	})
}

// TestADTSAgainstFFprobe splits ffmpeg's ADTS output and compares the frames
// and their configuration with ffprobe's report.
func TestADTSAgainstFFprobe(t *testing.T) {
	for _, c := range []struct{ rate, channels string }{{"48000", "2"}, {"44100", "1"}, {"22050", "6"}} {
		file, data := mediatest.Encode(t, "a.aac", "-f", "lavfi", "-i", "sine=f=440:sample_rate="+c.rate,
			"-ac", c.channels, "-t", "1", "-c:a", "aac")
		probe := mediatest.FFprobe(t, file)
		frames, err := SplitADTS(data)
		if err != nil {
			t.Fatal(err)
		}
		pkts := probe.PacketsOf(0)
		if len(frames) != len(pkts) || len(frames) < 20 {
			t.Fatalf("%d frames, ffprobe %d packets", len(frames), len(pkts))
		}
		for i, f := range frames {
			if len(f.AU)+7 != pkts[i].SizeBytes() && len(f.AU) != pkts[i].SizeBytes() {
				t.Fatalf("frame %d: %d bytes, ffprobe %d", i, len(f.AU), pkts[i].SizeBytes())
			}
		}
		s := probe.Streams[0]
		cfg := frames[0].Config
		if strconv.Itoa(cfg.SampleRate) != s.SampleRate || cfg.Channels() != s.Channels || s.Profile != "LC" ||
			cfg.ObjectType != ObjectTypeAACLC {
			t.Errorf("config %+v, ffprobe %s Hz %d channels %s", cfg, s.SampleRate, s.Channels, s.Profile)
		}
	}
	for _, bad := range []string{"fff1", "00f14c8024fffc", "fff14c80ffffff", "fff17c8024fffc", "fff14c0024fffc", "fff14c8024fffd"} {
		b, _ := hex.DecodeString(bad)
		if _, _, err := ParseADTS(b); !errors.Is(err, ErrADTS) {
			t.Errorf("ParseADTS(%s) accepted", bad)
		}
	}
}

func TestParseFMTP(t *testing.T) {
	f, err := ParseFMTP("streamtype=5; profile-level-id=1; mode=AAC-hbr; sizelength=13; indexlength=3; indexdeltalength=3; config=1190")
	if err != nil {
		t.Fatal(err)
	}
	if f.Mode != "AAC-hbr" || f.SizeLength != 13 || f.IndexLength != 3 || f.IndexDeltaLength != 3 ||
		f.Config.SampleRate != 48000 || !bytes.Equal(f.ConfigBytes, []byte{0x11, 0x90}) {
		t.Fatalf("%+v", f)
	}
	if d := NewDepacketizer(f); d.SizeLength != 13 || d.SamplesPerAU != 1024 {
		t.Fatalf("NewDepacketizer %+v", d)
	}
	for _, bad := range []string{"sizelength=13", "config=1190", "config=zz;sizelength=13", "config=1190;sizelength=99"} {
		if _, err := ParseFMTP(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
