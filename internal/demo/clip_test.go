package demo

import (
	"bytes"
	"testing"
	"time"
)

func TestEmbeddedClip(t *testing.T) {
	c, err := LoadClip()
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Frames) != 180 || c.Duration() != 6*time.Second {
		t.Fatalf("%d frames (%v), want 180 (6 s)", len(c.Frames), c.Duration())
	}
	if len(c.Audio) != 300 {
		t.Fatalf("%d audio packets, want 300 (6 s of 20 ms)", len(c.Audio))
	}
	// A keyframe with its parameter sets every 30 frames, so a viewer
	// joining anywhere starts within a second.
	for i, f := range c.Frames {
		isKey := bytes.Contains(f, []byte{0, 0, 0, 1, 0x65})
		hasSPS := bytes.Contains(f, []byte{0, 0, 0, 1, 0x67})
		if (i%30 == 0) != isKey || isKey != hasSPS {
			t.Fatalf("frame %d: keyframe=%v sps=%v", i, isKey, hasSPS)
		}
	}
	for i, a := range c.Audio {
		if len(a) == 0 || len(a) > 400 {
			t.Fatalf("audio packet %d has %d bytes", i, len(a))
		}
	}
	if len(clipH264)+len(clipOgg) > 1<<20 {
		t.Fatalf("clip is %d bytes, over 1 MB", len(clipH264)+len(clipOgg))
	}
}

func TestParseClipRejectsBadInput(t *testing.T) {
	if _, err := parseClip([]byte{0, 0, 0, 1, 0x41, 1, 2, 3}, clipOgg); err == nil {
		t.Fatal("video without a leading keyframe accepted")
	}
	if _, err := parseClip(clipH264, []byte("not ogg")); err == nil {
		t.Fatal("bad audio accepted")
	}
	if _, err := parseClip(clipH264, clipOgg[:4000]); err == nil {
		t.Fatal("audio shorter than the video accepted")
	}
}
