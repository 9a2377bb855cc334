package bus

import "testing"

// FuzzHandled checks the ledger against a plain set: whatever the order of
// acknowledgements and prefix raises, has() answers exactly the set, as
// long as fewer than handledLimit numbers are out of order.
func FuzzHandled(f *testing.F) {
	f.Add([]byte{1, 2, 3, 5, 4})
	f.Add([]byte{9, 8, 7, 0x81, 2})
	f.Add([]byte{200, 1, 0x85, 3})
	f.Fuzz(func(t *testing.T, ops []byte) {
		var h handled
		set := map[uint64]bool{}
		for _, op := range ops {
			seq := uint64(op & 0x7f)
			if op&0x80 != 0 {
				h.raise(seq)
				for s := uint64(1); s <= seq; s++ {
					set[s] = true
				}
			} else if seq > 0 {
				h.add(seq)
				set[seq] = true
			}
		}
		for s := uint64(1); s < 130; s++ {
			if h.has(s) != set[s] {
				t.Fatalf("ops %v: has(%d) = %v, want %v (prefix %d, above %v)", ops, s, h.has(s), set[s], h.prefix, h.above)
			}
		}
		for s := range h.above {
			if s <= h.prefix+1 {
				t.Fatalf("ops %v: %d kept above prefix %d", ops, s, h.prefix)
			}
		}
	})
}

func TestHandledGivesUpOldHoles(t *testing.T) {
	var h handled
	// 1 never comes (trimmed); everything after does.
	for s := uint64(2); s < handledLimit+10; s++ {
		h.add(s)
	}
	if len(h.above) > handledLimit {
		t.Fatalf("%d numbers kept above the prefix", len(h.above))
	}
	if !h.has(handledLimit + 9) {
		t.Fatal("lost track of handled numbers")
	}
}

// FuzzParseEntries feeds stream entries as any writer could have left them:
// the consumer must not panic, and only well-formed ones get an origin.
func FuzzParseEntries(f *testing.F) {
	f.Add("o1", "5", "data")
	f.Add("", "", "")
	f.Add("o", "-1", "x")
	f.Add("o", "18446744073709551616", "x")
	f.Fuzz(func(t *testing.T, o, s, d string) {
		es := parseEntries(toMessages(o, s, d))
		if len(es) != 1 {
			t.Fatal("entry lost")
		}
		if es[0].origin != "" && (es[0].seq == 0 || es[0].origin != o) {
			t.Fatalf("bad parse %+v", es[0])
		}
		if string(es[0].data) != d {
			t.Fatalf("data %q, want %q", es[0].data, d)
		}
	})
}
