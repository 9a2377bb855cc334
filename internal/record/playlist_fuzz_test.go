package record

import (
	"strings"
	"testing"
)

// FuzzParsePlaylist: whatever a recording's playlist on disk holds, parsing
// does not panic and only ever names a recording's own files.
func FuzzParsePlaylist(f *testing.F) {
	f.Add([]byte("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:2.00000,\nseg-00001.m4s\n#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init-2.mp4\"\n#EXTINF:1.5,\nseg-00002.m4s\n#EXT-X-ENDLIST\n"))
	f.Add([]byte("#EXTINF:2,\n../../etc/passwd\n"))
	f.Add([]byte("#EXT-X-MAP:URI=\"../x\"\n"))
	f.Add([]byte("#EXTINF:NaN,\nseg-00001.m4s\n"))
	f.Add([]byte("seg-00001.m4s\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		segs, _ := parsePlaylist(b)
		for _, s := range segs {
			if !validFile(s.file) || !strings.HasPrefix(s.file, "seg-") || (s.init != "" && !validFile(s.init)) {
				t.Fatalf("parsed a foreign name: %+v", s)
			}
			if s.duration < 0 {
				t.Fatalf("negative duration %v", s.duration)
			}
		}
	})
}

// FuzzValidID: ids name directories; only newID's shape is accepted.
func FuzzValidID(f *testing.F) {
	id, _ := newID()
	for _, s := range []string{id, "20260101T000000Z-abcdefgh", "../../../../etc", "", "20260101T000000Z-ABCDEFGH"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if validID(s) && (strings.ContainsAny(s, "./\\\x00") || len(s) != 25) {
			t.Fatalf("accepted %q", s)
		}
	})
}
