package whiptest

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
)

var startCode = []byte{0, 0, 0, 1}

// H264Frames makes n distinct H.264 access units in Annex-B form. Every
// gop-th frame (the first included) is an IDR preceded by SPS and PPS;
// the others are non-IDR slices. Sizes vary from a few bytes to several
// packets. Payload bytes are never zero, so no start code can appear
// inside a NAL unit.
func H264Frames(n, gop int, seed uint64) [][]byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	sps := []byte{0x67, 0x42, 0xe0, 0x1f, 0xda, 0x02, 0x80, 0xbf, 0xe5, 0x84}
	pps := []byte{0x68, 0xce, 0x3c, 0x80}
	frames := make([][]byte, n)
	for i := range frames {
		var f []byte
		var nal []byte
		if i%gop == 0 {
			f = append(f, startCode...)
			f = append(f, sps...)
			f = append(f, startCode...)
			f = append(f, pps...)
			nal = append(nal, 0x65)
			nal = appendRandom(r, nal, 3000+r.IntN(4000))
		} else {
			nal = append(nal, 0x41)
			nal = appendRandom(r, nal, 10+r.IntN(2500))
		}
		// Tag the frame with its index so mix-ups are obvious.
		nal[1], nal[2] = byte(i>>8)|1, byte(i)|1
		f = append(f, startCode...)
		f = append(f, nal...)
		frames[i] = f
	}
	return frames
}

func appendRandom(r *rand.Rand, b []byte, n int) []byte {
	for range n {
		b = append(b, byte(1+r.IntN(255)))
	}
	return b
}

// Collector records RTP packets of one track as a receiver sees them, for
// later reassembly. Safe for concurrent use.
type Collector struct {
	mu      sync.Mutex
	pkts    []collected
	lastExt uint64
	have    bool
}

type collected struct {
	ext uint64
	pkt rtp.Packet
}

// Add copies p.
func (c *Collector) Add(p *rtp.Packet) {
	cp := rtp.Packet{Header: p.Header, Payload: append([]byte(nil), p.Payload...)}
	cp.Header.Extensions = nil
	cp.Header.CSRC = nil
	c.mu.Lock()
	defer c.mu.Unlock()
	ext := uint64(p.SequenceNumber)
	if c.have {
		// Unwrap relative to the previous packet (arrivals are nearly in order).
		d := int16(p.SequenceNumber - uint16(c.lastExt))
		ext = uint64(int64(c.lastExt) + int64(d))
	} else {
		ext += 1 << 32
	}
	if !c.have || ext > c.lastExt {
		c.lastExt = ext
	}
	c.have = true
	c.pkts = append(c.pkts, collected{ext: ext, pkt: cp})
}

// Len is the number of packets received (duplicates included).
func (c *Collector) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pkts)
}

// Packets returns the received packets in arrival order.
func (c *Collector) Packets() []rtp.Packet {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]rtp.Packet, len(c.pkts))
	for i, p := range c.pkts {
		out[i] = p.pkt
	}
	return out
}

// Ordered returns the packets sorted by (unwrapped) sequence number with
// duplicates (retransmissions) removed.
func (c *Collector) Ordered() []rtp.Packet {
	c.mu.Lock()
	all := slices.Clone(c.pkts)
	c.mu.Unlock()
	slices.SortStableFunc(all, func(a, b collected) int {
		switch {
		case a.ext < b.ext:
			return -1
		case a.ext > b.ext:
			return 1
		}
		return 0
	})
	out := make([]rtp.Packet, 0, len(all))
	for i, p := range all {
		if i > 0 && p.ext == all[i-1].ext {
			continue
		}
		out = append(out, p.pkt)
	}
	return out
}

// H264Frames reassembles Annex-B access units from the ordered packets,
// one per RTP timestamp ending at the marker bit. It fails on a sequence
// gap, since a lost packet means a broken frame.
func (c *Collector) H264Frames() ([][]byte, error) {
	pkts := c.Ordered()
	var frames [][]byte
	var cur []byte
	var d codecs.H264Packet
	for i, p := range pkts {
		if i > 0 && p.SequenceNumber != pkts[i-1].SequenceNumber+1 {
			return frames, fmt.Errorf("sequence gap: %d then %d", pkts[i-1].SequenceNumber, p.SequenceNumber)
		}
		if len(p.Payload) == 0 {
			continue // padding-only (bandwidth probing)
		}
		out, err := d.Unmarshal(p.Payload)
		if err != nil {
			return frames, fmt.Errorf("packet %d: %w", p.SequenceNumber, err)
		}
		cur = append(cur, out...)
		if p.Marker {
			frames = append(frames, cur)
			cur = nil
		}
	}
	return frames, nil
}

// EqualFrames reports the first difference between sent and received frames.
func EqualFrames(sent, got [][]byte) error {
	if len(got) != len(sent) {
		return fmt.Errorf("received %d frames, sent %d", len(got), len(sent))
	}
	for i := range sent {
		if !bytes.Equal(sent[i], got[i]) {
			return fmt.Errorf("frame %d differs: sent %d bytes, received %d", i, len(sent[i]), len(got[i]))
		}
	}
	return nil
}
