package h264

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
)

// testAU is an access unit with the RTP packets pion's payloader made of it.
type testAU struct {
	nalus   [][]byte
	pts     int64
	packets []*rtp.Packet
}

// packetizeX264 packetizes a libx264 stream with pion's H.264 payloader
// (SPS+PPS in STAP-A, large slices in FU-A), the way a WebRTC sender does.
// The RTP timestamp of each access unit is its PTS.
func packetizeX264(t testing.TB, mtu uint16) []testAU {
	t.Helper()
	s := encodeX264(t)
	pts, _ := ptsFromMP4(t, s.mp4)
	aus := SplitAccessUnits(SplitAnnexB(s.annex))
	p := rtp.NewPacketizer(mtu, 96, 0x1234, &codecs.H264Payloader{}, rtp.NewFixedSequencer(65000), 90000)
	const tsBase = 0xFFFF0000 // wraps during the stream
	var out []testAU
	for i, au := range aus {
		pkts := p.Packetize(AppendAnnexB(nil, au), 3000)
		for _, pk := range pkts {
			pk.Timestamp = uint32(tsBase + pts[i])
		}
		out = append(out, testAU{nalus: au, pts: tsBase + pts[i], packets: pkts})
	}
	return out
}

type gotAU struct {
	nalus [][]byte
	pts   int64
}

func runDepacketizer(t *testing.T, d *Depacketizer, pkts []*rtp.Packet) ([]gotAU, []error) {
	t.Helper()
	var got []gotAU
	var errs []error
	for _, pk := range pkts {
		aus, err := d.Push(pk)
		if err != nil {
			errs = append(errs, err)
		}
		for _, au := range aus {
			got = append(got, gotAU{au.NALUs, au.PTS})
		}
	}
	return got, errs
}

func sameAU(a [][]byte, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

func allPackets(aus []testAU) []*rtp.Packet {
	var out []*rtp.Packet
	for _, au := range aus {
		out = append(out, au.packets...)
	}
	return out
}

// checkDelivered requires got to be exactly the access units of want
// except those listed in missing.
func checkDelivered(t *testing.T, got []gotAU, want []testAU, missing map[int]bool) {
	t.Helper()
	j := 0
	for i, w := range want {
		if missing[i] {
			continue
		}
		if j >= len(got) {
			t.Fatalf("only %d access units delivered; AU %d missing", len(got), i)
		}
		if !sameAU(got[j].nalus, w.nalus) || got[j].pts != w.pts {
			t.Fatalf("delivered AU %d (source %d) differs: %d NALUs pts %d, want %d NALUs pts %d",
				j, i, len(got[j].nalus), got[j].pts, len(w.nalus), w.pts)
		}
		j++
	}
	if j != len(got) {
		t.Fatalf("%d access units delivered, want %d", len(got), j)
	}
}

func TestDepacketizerRoundTrip(t *testing.T) {
	aus := packetizeX264(t, 1200)
	var fua, stap bool
	for _, pk := range allPackets(aus) {
		switch NALUType(pk.Payload[0] & 0x1F) {
		case NALUTypeFUA:
			fua = true
		case NALUTypeSTAPA:
			stap = true
		}
	}
	if !fua || !stap {
		t.Fatalf("test stream lacks FU-A (%v) or STAP-A (%v)", fua, stap)
	}
	var d Depacketizer
	got, errs := runDepacketizer(t, &d, allPackets(aus))
	if len(errs) > 0 {
		t.Fatalf("errors: %v", errs)
	}
	checkDelivered(t, got, aus, nil)
	if st := d.Stats(); st.AccessUnits != uint64(len(aus)) || st.PacketsLost != 0 || st.AccessUnitsDropped != 0 {
		t.Errorf("stats %+v", st)
	}
}

// pick returns the index of the first access unit after from that has at
// least n packets and whose first packet holds its first slice.
func pick(t *testing.T, aus []testAU, from, n int) int {
	for i := from; i < len(aus); i++ {
		p := aus[i].packets[0].Payload
		if len(aus[i].packets) >= n && NALUType(p[0]&0x1F) == NALUTypeFUA {
			return i
		}
	}
	t.Fatalf("no access unit with %d packets", n)
	return 0
}

func TestDepacketizerLoss(t *testing.T) {
	aus := packetizeX264(t, 1200)
	k := pick(t, aus, 5, 3)
	for name, lose := range map[string]int{"first": 0, "middle": 1, "last(marker)": len(aus[k].packets) - 1} {
		t.Run(name, func(t *testing.T) {
			var pkts []*rtp.Packet
			for i, au := range aus {
				for j, pk := range au.packets {
					if i == k && j == lose {
						continue
					}
					pkts = append(pkts, pk)
				}
			}
			d := Depacketizer{ReorderWindow: -1}
			got, errs := runDepacketizer(t, &d, pkts)
			checkDelivered(t, got, aus, map[int]bool{k: true})
			if len(errs) != 1 || !errors.Is(errs[0], ErrPacketLoss) {
				t.Fatalf("errors %v, want one ErrPacketLoss", errs)
			}
			if st := d.Stats(); st.PacketsLost != 1 || st.AccessUnitsDropped != 1 {
				t.Errorf("stats %+v", st)
			}
		})
	}
	// Losing a whole access unit costs that unit only.
	t.Run("whole", func(t *testing.T) {
		var pkts []*rtp.Packet
		for i, au := range aus {
			if i != k {
				pkts = append(pkts, au.packets...)
			}
		}
		var d Depacketizer
		got, errs := runDepacketizer(t, &d, pkts)
		// Packets after the gap wait in the reorder window until it fills,
		// then the gap is declared lost: only k is missing, and since no
		// packet of a delivered unit was lost there is nothing to report
		// but the count.
		checkDelivered(t, got, aus, map[int]bool{k: true})
		if len(errs) != 0 || d.Stats().PacketsLost != uint64(len(aus[k].packets)) {
			t.Errorf("errors %v stats %+v", errs, d.Stats())
		}
	})
}

func TestDepacketizerReorder(t *testing.T) {
	aus := packetizeX264(t, 1200)
	pkts := allPackets(aus)
	rng := rand.New(rand.NewPCG(1, 2))
	// Displace packets by up to 8 positions, within the default window.
	// The first packet stays first: it fixes where the sequence starts.
	shuffled := append([]*rtp.Packet(nil), pkts...)
	for i := 1; i+8 < len(shuffled); i += 9 {
		j := i + 1 + rng.IntN(8)
		shuffled[i], shuffled[j] = shuffled[j], shuffled[i]
	}
	// And one duplicate.
	shuffled = append(shuffled[:40], append([]*rtp.Packet{shuffled[38]}, shuffled[40:]...)...)
	var d Depacketizer
	got, errs := runDepacketizer(t, &d, shuffled)
	if len(errs) > 0 {
		t.Fatalf("errors: %v", errs)
	}
	checkDelivered(t, got, aus, nil)
	if d.Stats().PacketsLate != 1 {
		t.Errorf("stats %+v", d.Stats())
	}

	// A packet delayed beyond the window counts as lost, then late.
	k := pick(t, aus, 10, 3)
	late := aus[k].packets[1]
	var delayed []*rtp.Packet
	for _, pk := range pkts {
		if pk == late {
			continue
		}
		delayed = append(delayed, pk)
		if len(delayed) == 200 {
			delayed = append(delayed, late)
		}
	}
	d = Depacketizer{ReorderWindow: 4}
	got, errs = runDepacketizer(t, &d, delayed)
	checkDelivered(t, got, aus, map[int]bool{k: true})
	if len(errs) != 1 || !errors.Is(errs[0], ErrPacketLoss) || d.Stats().PacketsLate != 1 {
		t.Errorf("errors %v stats %+v", errs, d.Stats())
	}
}

// Without marker bits, a timestamp change ends the access unit.
func TestDepacketizerNoMarker(t *testing.T) {
	aus := packetizeX264(t, 1200)
	var pkts []*rtp.Packet
	for _, pk := range allPackets(aus) {
		c := *pk
		c.Marker = false
		pkts = append(pkts, &c)
	}
	var d Depacketizer
	got, errs := runDepacketizer(t, &d, pkts)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	checkDelivered(t, got, aus[:len(aus)-1], nil) // the last waits for its end
}

func TestDepacketizerLimits(t *testing.T) {
	aus := packetizeX264(t, 1200)
	d := Depacketizer{MaxAccessUnitSize: 3000}
	got, errs := runDepacketizer(t, &d, allPackets(aus))
	missing := map[int]bool{}
	for i, au := range aus {
		size := 0
		for _, n := range au.nalus {
			size += len(n)
		}
		if size > 3000 {
			missing[i] = true
		}
	}
	if len(missing) == 0 || len(missing) == len(aus) {
		t.Fatalf("limit hits %d of %d units", len(missing), len(aus))
	}
	checkDelivered(t, got, aus, missing)
	if len(errs) != len(missing) || !errors.Is(errs[0], ErrTooLarge) {
		t.Errorf("%d errors for %d oversized units: %v", len(errs), len(missing), errs[0])
	}

	// An endless fragmented NAL unit stops at the limit.
	d = Depacketizer{MaxAccessUnitSize: 1 << 16}
	var tooLarge bool
	for i := range 200 {
		hdr := byte(0x05)
		if i == 0 {
			hdr |= 0x80
		}
		payload := append([]byte{0x7c, hdr}, make([]byte, 1000)...)
		_, err := d.Push(&rtp.Packet{Header: rtp.Header{SequenceNumber: uint16(i), Timestamp: 1}, Payload: payload})
		if errors.Is(err, ErrTooLarge) {
			tooLarge = true
		}
		if d.asm.Buffered() > 1<<16 {
			t.Fatalf("buffered %d bytes", d.asm.Buffered())
		}
	}
	if !tooLarge {
		t.Error("no ErrTooLarge for an endless FU-A")
	}
}

func TestDepacketizerMalformed(t *testing.T) {
	for name, payloads := range map[string][][]byte{
		"empty":              {{}},
		"forbidden bit":      {{0xe5, 1}},
		"stap-a truncated":   {{0x78, 0, 5, 0x65}},
		"stap-a zero size":   {{0x78, 0, 0}},
		"fu-a no start":      {{0x7c, 0x05, 1}},
		"fu-a start and end": {{0x7c, 0xc5, 1}},
		"fu-a interrupted":   {{0x7c, 0x85, 1}, {0x65, 2}},
		"fu-a unfinished":    {{0x7c, 0x85, 1}},
		"fu-b":               {{0x7d, 0x85, 0, 0, 1}},
		"undefined type":     {{0x1e}},
	} {
		t.Run(name, func(t *testing.T) {
			var d Depacketizer
			var err error
			for i, p := range payloads {
				_, e := d.Push(&rtp.Packet{Header: rtp.Header{SequenceNumber: uint16(i), Timestamp: 10,
					Marker: i == len(payloads)-1}, Payload: p})
				err = errors.Join(err, e)
			}
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v", err)
			}
			// The depacketizer goes on with the next unit.
			aus, err := d.Push(&rtp.Packet{Header: rtp.Header{SequenceNumber: uint16(len(payloads)), Timestamp: 20,
				Marker: true}, Payload: []byte{0x65, 0x88}})
			if err != nil || len(aus) != 1 || aus[0].PTS != 20 {
				t.Fatalf("next unit: %v %v", aus, err)
			}
		})
	}
}

// FuzzDepacketizer feeds arbitrary packets: the input is a run of records
// (2-byte length, flags byte whose bits pick marker, timestamp step and
// sequence skips, then the payload).
func FuzzDepacketizer(f *testing.F) {
	f.Add([]byte{0, 3, 1, 0x65, 0x88, 0x84})
	f.Add([]byte{0, 4, 0, 0x7c, 0x85, 1, 2, 0, 3, 1, 0x7c, 0x45, 3})
	f.Add([]byte{0, 9, 1, 0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce})
	f.Fuzz(func(t *testing.T, in []byte) {
		d := Depacketizer{MaxAccessUnitSize: 4096, MaxNALUs: 8, ReorderWindow: 4}
		seq, ts := uint16(0), uint32(0)
		for len(in) >= 3 {
			n := int(binary.BigEndian.Uint16(in))
			flags := in[2]
			in = in[3:]
			n = min(n, len(in))
			payload := in[:n]
			in = in[n:]
			seq += 1 + uint16(flags>>4&3)
			if flags&2 != 0 {
				ts += 3000
			}
			aus, _ := d.Push(&rtp.Packet{Header: rtp.Header{SequenceNumber: seq, Timestamp: ts, Marker: flags&1 != 0},
				Payload: payload})
			for _, au := range aus {
				size := 0
				for _, nalu := range au.NALUs {
					if len(nalu) == 0 {
						t.Fatal("empty NAL unit delivered")
					}
					size += len(nalu)
				}
				if size > 4096 || len(au.NALUs) > 8 {
					t.Fatalf("limits exceeded: %d bytes, %d NALUs", size, len(au.NALUs))
				}
			}
		}
	})
}
