package opus

import (
	"bytes"
	"errors"
	"testing"

	"github.com/backchannel/backchannel/internal/codec/internal/mediatest"
)

func TestTOC(t *testing.T) {
	for _, c := range []struct {
		pkt     []byte
		frames  int
		samples int
	}{
		{[]byte{0x00}, 1, 480},             // SILK NB 10 ms, code 0
		{[]byte{0x0b << 3}, 1, 2880},       // SILK 60 ms
		{[]byte{0x0d<<3 | 1}, 2, 1920},     // hybrid 20 ms, two frames
		{[]byte{0x1f<<3 | 4 | 2}, 2, 1920}, // CELT FB 20 ms stereo, two sizes
		{[]byte{0x10<<3 | 3, 0x03}, 3, 360},
		{[]byte{0x1b<<3 | 3, 0x06}, 6, 5760}, // 6 x 20 ms = 120 ms, the maximum
	} {
		n, err := Frames(c.pkt)
		d, err2 := PacketDuration(c.pkt)
		if err != nil || err2 != nil || n != c.frames || d != c.samples {
			t.Errorf("%x: frames %d duration %d (%v %v), want %d %d", c.pkt, n, d, err, err2, c.frames, c.samples)
		}
	}
	for _, bad := range [][]byte{nil, {0x03}, {0x03, 0x00}, {0x1b<<3 | 3, 0x07}} {
		if _, err := PacketDuration(bad); !errors.Is(err, ErrPacket) {
			t.Errorf("%x accepted", bad)
		}
	}
	if toc := ParseTOC(0xfc); toc.Config != 31 || !toc.Stereo || toc.Code != 0 {
		t.Errorf("ParseTOC(0xfc) = %+v", toc)
	}
}

func TestNewHead(t *testing.T) {
	h, err := NewHead(2)
	if err != nil || h.MappingFamily != 0 || h.PreSkip != 312 || h.InputSampleRate != 48000 || h.ChannelMapping != nil {
		t.Errorf("stereo head %+v %v", h, err)
	}
	h, err = NewHead(6)
	if err != nil || h.MappingFamily != 1 || h.StreamCount != 4 || h.CoupledCount != 2 ||
		!bytes.Equal(h.ChannelMapping, []byte{0, 4, 1, 2, 3, 5}) {
		t.Errorf("5.1 head %+v %v", h, err)
	}
	for _, n := range []int{0, 9} {
		if _, err := NewHead(n); err == nil {
			t.Errorf("NewHead(%d) accepted", n)
		}
	}
}

// oggPackets reassembles the packets of the single logical stream of an
// Ogg file (RFC 3533).
func oggPackets(t *testing.T, b []byte) [][]byte {
	t.Helper()
	var pkts [][]byte
	var cur []byte
	for len(b) > 0 {
		if len(b) < 27 || string(b[:4]) != "OggS" {
			t.Fatalf("bad Ogg page at %d bytes from the end", len(b))
		}
		nseg := int(b[26])
		segs := b[27 : 27+nseg]
		body := b[27+nseg:]
		for _, s := range segs {
			cur = append(cur, body[:s]...)
			body = body[s:]
			if s < 255 {
				pkts = append(pkts, cur)
				cur = nil
			}
		}
		size := 27 + nseg
		for _, s := range segs {
			size += int(s)
		}
		b = b[size:]
	}
	return pkts
}

// TestAgainstFFprobe encodes Opus with libopus and checks the header and
// every packet's duration against ffprobe.
func TestAgainstFFprobe(t *testing.T) {
	for _, c := range []struct {
		channels, frameMS string
		want              int
	}{{"2", "20", 2}, {"1", "60", 1}, {"6", "10", 6}, {"2", "2.5", 2}} {
		file, data := mediatest.Encode(t, "a.ogg", "-f", "lavfi", "-i", "sine=f=440:sample_rate=48000",
			"-ac", c.channels, "-t", "1", "-c:a", "libopus", "-frame_duration", c.frameMS)
		probe := mediatest.FFprobe(t, file)
		pkts := oggPackets(t, data)
		head, err := ParseOpusHead(pkts[0])
		if err != nil {
			t.Fatal(err)
		}
		if head.Channels != c.want || head.Channels != probe.Streams[0].Channels {
			t.Errorf("%s ch: head %+v, ffprobe %d channels", c.channels, head, probe.Streams[0].Channels)
		}
		want, _ := NewHead(c.want)
		if head.MappingFamily != want.MappingFamily || head.StreamCount != want.StreamCount ||
			head.CoupledCount != want.CoupledCount || !bytes.Equal(head.ChannelMapping, want.ChannelMapping) ||
			(head.PreSkip != want.PreSkip && c.frameMS != "2.5") { // 2.5 ms frames force CELT, 120 samples of delay
			t.Errorf("libopus head %+v, NewHead %+v", head, want)
		}
		audio := pkts[2:] // after OpusHead and OpusTags
		probed := probe.PacketsOf(0)
		if len(audio) != len(probed) {
			t.Fatalf("%d packets, ffprobe %d", len(audio), len(probed))
		}
		for i, p := range audio {
			d, err := PacketDuration(p)
			if err != nil {
				t.Fatal(err)
			}
			// ffprobe trims the last packet to the end of the stream.
			if int64(d) != probed[i].Duration && i != len(audio)-1 {
				t.Fatalf("%s ms packet %d: %d samples, ffprobe %d", c.frameMS, i, d, probed[i].Duration)
			}
		}
	}
}

func TestParseOpusHeadRejects(t *testing.T) {
	good := []byte("OpusHead\x01\x02\x38\x01\x80\xbb\x00\x00\x00\x00\x00")
	if h, err := ParseOpusHead(good); err != nil || h.Channels != 2 || h.PreSkip != 312 || h.InputSampleRate != 48000 {
		t.Fatalf("%+v %v", h, err)
	}
	for _, bad := range [][]byte{
		good[:18],
		[]byte("OpusHeaX\x01\x02\x38\x01\x80\xbb\x00\x00\x00\x00\x00"),
		[]byte("OpusHead\x11\x02\x38\x01\x80\xbb\x00\x00\x00\x00\x00"),
		[]byte("OpusHead\x01\x00\x38\x01\x80\xbb\x00\x00\x00\x00\x00"),
		[]byte("OpusHead\x01\x03\x38\x01\x80\xbb\x00\x00\x00\x00\x00"),
		[]byte("OpusHead\x01\x03\x38\x01\x80\xbb\x00\x00\x00\x00\x01\x02\x01\x00"),
		[]byte("OpusHead\x01\x03\x38\x01\x80\xbb\x00\x00\x00\x00\x01\x01\x02\x00\x01\x02"),
	} {
		if _, err := ParseOpusHead(bad); !errors.Is(err, ErrHead) {
			t.Errorf("%q accepted", bad)
		}
	}
}
