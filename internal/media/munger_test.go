package media

import (
	"testing"
	"time"
)

func TestMungerFirstPacketUsesStartValues(t *testing.T) {
	m := NewMunger(90000, 1000, 5000)
	now := time.Now()
	seq, ts, ok := m.Munge(42, 777, now)
	if !ok || seq != 1000 || ts != 5000 {
		t.Fatalf("first packet = (%d, %d, %v), want (1000, 5000, true)", seq, ts, ok)
	}
	seq, ts, ok = m.Munge(43, 777+3000, now)
	if !ok || seq != 1001 || ts != 8000 {
		t.Fatalf("second packet = (%d, %d, %v), want (1001, 8000, true)", seq, ts, ok)
	}
	// A gap in the input stays a gap, so receivers can NACK it.
	seq, _, _ = m.Munge(46, 777+6000, now)
	if seq != 1004 {
		t.Fatalf("after gap seq = %d, want 1004", seq)
	}
	// A late packet keeps its place.
	seq, ts, ok = m.Munge(45, 777+6000, now)
	if !ok || seq != 1003 || ts != 11000 {
		t.Fatalf("reordered packet = (%d, %d, %v), want (1003, 11000, true)", seq, ts, ok)
	}
	if ls, lt, ok := m.Last(); !ok || ls != 1004 || lt != 11000 {
		t.Fatalf("Last = (%d, %d, %v), want newest (1004, 11000)", ls, lt, ok)
	}
	// A packet sent before the first one to arrive (a keyframe's parameter
	// sets, reordered behind its first slice) keeps its place too: nothing
	// was sent before the stream's first packet.
	seq, ts, ok = m.Munge(41, 777, now)
	if !ok || seq != 999 || ts != 5000 {
		t.Fatalf("packet reordered behind the first = (%d, %d, %v), want (999, 5000, true)", seq, ts, ok)
	}
	if _, _, ok := m.Munge(42-reorderRoom-1, 777, now); ok {
		t.Fatal("a packet further before the first than reorderRoom was forwarded")
	}
	if ls, _, _ := m.Last(); ls != 1004 {
		t.Fatalf("Last = %d after late packets, want 1004", ls)
	}
}

func TestMungerTakeoverContinuity(t *testing.T) {
	m := NewMunger(90000, 200, 1_000_000)
	t0 := time.Unix(1000, 0)
	var lastSeq uint16
	var lastTS uint32
	for i := range 10 {
		lastSeq, lastTS, _ = m.Munge(uint16(5000+i), uint32(90_000+3000*i), t0.Add(time.Duration(i)*33*time.Millisecond))
	}
	lastAt := t0.Add(9 * 33 * time.Millisecond)

	// A new source with unrelated numbering arrives 250 ms later.
	m.Reset()
	at := lastAt.Add(250 * time.Millisecond)
	seq, ts, ok := m.Munge(60000, 3_000_000_000, at)
	if !ok {
		t.Fatal("first packet of new source dropped")
	}
	if seq != lastSeq+1 {
		t.Fatalf("seq after takeover = %d, want %d", seq, lastSeq+1)
	}
	if want := lastTS + 90000/4; ts != want {
		t.Fatalf("ts after takeover = %d, want %d (250 ms at 90 kHz)", ts, want)
	}
	seq2, ts2, _ := m.Munge(60001, 3_000_000_000+3000, at.Add(33*time.Millisecond))
	if seq2 != seq+1 || ts2 != ts+3000 {
		t.Fatalf("second packet of new source = (%d, %d), want (%d, %d)", seq2, ts2, seq+1, ts+3000)
	}
	// A straggler from before the new source's first packet would collide
	// with numbers already sent: dropped.
	if _, _, ok := m.Munge(59999, 3_000_000_000-3000, at); ok {
		t.Fatal("packet older than the new source's first one was forwarded")
	}
}

func TestMungerImmediateTakeoverAdvancesTimestamp(t *testing.T) {
	m := NewMunger(48000, 0, 0)
	now := time.Now()
	_, ts, _ := m.Munge(1, 100, now)
	m.Reset()
	_, ts2, _ := m.Munge(9, 100, now) // same instant, same input timestamp
	if ts2 == ts {
		t.Fatal("new source's first timestamp equals the old source's last")
	}
}

func TestMungerWraparound(t *testing.T) {
	// Output numbers near the top of their ranges wrap like RTP fields.
	m := NewMunger(90000, 65534, 4294967000)
	now := time.Now()
	wantSeq := []uint16{65534, 65535, 0, 1}
	for i := range 4 {
		seq, ts, ok := m.Munge(uint16(10+i), uint32(3000*i), now)
		if !ok {
			t.Fatalf("packet %d dropped", i)
		}
		wantTS := uint32(4294967000) + uint32(3000*i) // wraps past 2^32
		if seq != wantSeq[i] || ts != wantTS {
			t.Fatalf("packet %d = (%d, %d), want (%d, %d)", i, seq, ts, wantSeq[i], wantTS)
		}
	}

	// Input wrapping: the publisher's own numbers wrap mid-stream.
	m = NewMunger(90000, 100, 100)
	prevSeq, prevTS, _ := m.Munge(65533, 4294964296, now)
	for i := 1; i < 6; i++ {
		inSeq := uint16(65533 + i)                  // wraps to 0, 1, 2
		inTS := uint32(4294964296) + uint32(3000*i) // wraps
		seq, ts, ok := m.Munge(inSeq, inTS, now)
		if !ok || seq != prevSeq+1 || ts != prevTS+3000 {
			t.Fatalf("input wrap step %d = (%d, %d, %v), want (%d, %d)", i, seq, ts, ok, prevSeq+1, prevTS+3000)
		}
		prevSeq, prevTS = seq, ts
	}

	// Takeover exactly at the output wrap point.
	m = NewMunger(90000, 65535, 4294967295)
	m.Munge(7, 7, now)
	m.Reset()
	seq, ts, _ := m.Munge(500, 500, now.Add(time.Second))
	top := uint32(4294967295)
	if wantTS := top + 90000; seq != 0 || ts != wantTS {
		t.Fatalf("takeover across wrap = (%d, %d), want (0, %d)", seq, ts, wantTS)
	}
}

func TestMungerLongRunDoesNotDropNewPackets(t *testing.T) {
	// More than half the sequence space after the first packet, new
	// packets must still pass (the straggler bound follows the stream).
	m := NewMunger(48000, 0, 0)
	now := time.Now()
	for i := range 200000 {
		seq, _, ok := m.Munge(uint16(i), uint32(960*i), now)
		if !ok || seq != uint16(i) {
			t.Fatalf("packet %d = (%d, %v)", i, seq, ok)
		}
	}
}

func TestMungerTimestampForSenderReports(t *testing.T) {
	m := NewMunger(90000, 0, 1000)
	if _, ok := m.Timestamp(5); ok {
		t.Fatal("Timestamp before the first packet should not map")
	}
	m.Munge(1, 50, time.Now())
	if ts, ok := m.Timestamp(50 + 9000); !ok || ts != 1000+9000 {
		t.Fatalf("Timestamp = (%d, %v), want 10000", ts, ok)
	}
}
