package fmp4

import (
	"testing"

	"github.com/backchannel/backchannel/internal/codec/opus"
)

// FuzzReader feeds arbitrary bytes to the box reader: it must return an
// error or a result, never panic, and never report more samples than the
// buffer has bytes.
func FuzzReader(f *testing.F) {
	head, _ := opus.NewHead(2)
	m, err := NewMuxer(Track{ID: 1, Codec: &Opus{Head: head}})
	if err != nil {
		f.Fatal(err)
	}
	init, _ := m.Init()
	for i := range 3 {
		_ = m.WriteSample(1, TimedSample{DTS: int64(i * 960), PTS: int64(i * 960), Duration: 960, Data: []byte{0xfc, byte(i)}})
	}
	frag, _, _ := m.Fragment(NoLimit)
	f.Add(append(init, frag...))
	f.Add(frag)
	f.Add([]byte("\x00\x00\x00\x10moof\x00\x00\x00\x08traf"))
	f.Fuzz(func(t *testing.T, b []byte) {
		tracks, _ := ParseInit(b)
		frags, _ := ParseFragments(b, Defaults(tracks))
		n := 0
		for _, fr := range frags {
			for _, tf := range fr.Tracks {
				n += len(tf.Samples)
			}
		}
		if n > len(b) {
			t.Fatalf("%d samples from %d bytes", n, len(b))
		}
		_, _ = Find(b, "moov", "trak", "mdia", "minf", "stbl", "stsd")
	})
}
