package h265

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
)

type testAU struct {
	nalus   [][]byte
	pts     int64
	packets []*rtp.Packet
}

// packetizeX265 packetizes a libx265 stream with pion's H.265 payloader,
// which makes aggregation packets of the parameter sets and fragmentation
// units of large slices. The RTP timestamp of each access unit is its PTS.
func packetizeX265(t *testing.T) []testAU {
	t.Helper()
	s := encodeX265(t, "", x265Params("")...)
	pts, _ := timestampsFromMP4(t, s.mp4)
	aus := SplitAccessUnits(SplitAnnexB(s.annex))
	if len(aus) != len(pts) {
		t.Fatalf("%d access units, %d packets in the mp4", len(aus), len(pts))
	}
	p := rtp.NewPacketizer(1200, 96, 0x1234, &codecs.H265Payloader{}, rtp.NewFixedSequencer(65500), 90000)
	var out []testAU
	for i, au := range aus {
		var kept [][]byte
		var annexB []byte
		for _, n := range au {
			if t := TypeOf(n); t != NALUTypeAUD && t != NALUTypeFiller { // the payloader drops these
				kept = append(kept, n)
				annexB = append(annexB, 0, 0, 0, 1)
				annexB = append(annexB, n...)
			}
		}
		pkts := p.Packetize(annexB, 3000)
		for _, pk := range pkts {
			pk.Timestamp = uint32(pts[i])
		}
		out = append(out, testAU{nalus: kept, pts: pts[i], packets: pkts})
	}
	return out
}

func checkDelivered(t *testing.T, got []AccessUnit, want []testAU, missing map[int]bool) {
	t.Helper()
	j := 0
	for i, w := range want {
		if missing[i] {
			continue
		}
		if j >= len(got) {
			t.Fatalf("only %d access units delivered; AU %d missing", len(got), i)
		}
		same := len(got[j].NALUs) == len(w.nalus) && got[j].PTS == w.pts
		for k := 0; same && k < len(w.nalus); k++ {
			same = bytes.Equal(got[j].NALUs[k], w.nalus[k])
		}
		if !same {
			t.Fatalf("delivered AU %d (source %d) differs", j, i)
		}
		j++
	}
	if j != len(got) {
		t.Fatalf("%d access units delivered, want %d", len(got), j)
	}
}

// flatten splits the errors errors.Join combined.
func flatten(errs []error) []error {
	var out []error
	for _, e := range errs {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			out = append(out, j.Unwrap()...)
		} else {
			out = append(out, e)
		}
	}
	return out
}

func run(d *Depacketizer, pkts []*rtp.Packet) ([]AccessUnit, []error) {
	var got []AccessUnit
	var errs []error
	for _, pk := range pkts {
		aus, err := d.Push(pk)
		if err != nil {
			errs = append(errs, err)
		}
		for _, au := range aus {
			got = append(got, AccessUnit{NALUs: append([][]byte(nil), au.NALUs...), PTS: au.PTS})
		}
	}
	return got, errs
}

func TestDepacketizerRoundTrip(t *testing.T) {
	aus := packetizeX265(t)
	var pkts []*rtp.Packet
	kinds := map[NALUType]bool{}
	for _, au := range aus {
		for _, pk := range au.packets {
			kinds[TypeOf(pk.Payload)] = true
		}
		pkts = append(pkts, au.packets...)
	}
	if !kinds[NALUTypeAP] || !kinds[NALUTypeFU] {
		t.Fatalf("test stream lacks AP or FU packets: %v", kinds)
	}
	var d Depacketizer
	got, errs := run(&d, pkts)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	checkDelivered(t, got, aus, nil)

	// Loss: one packet in the middle of a fragmented picture, and the
	// packet with the marker bit of another, cost exactly those pictures.
	var k1, k2 int
	for i := 5; i < len(aus); i++ {
		if len(aus[i].packets) >= 3 {
			if k1 == 0 {
				k1 = i
			} else if i > k1+1 {
				k2 = i
				break
			}
		}
	}
	if k2 == 0 {
		t.Fatal("no multi-packet pictures")
	}
	var lossy []*rtp.Packet
	for i, au := range aus {
		for j, pk := range au.packets {
			if (i == k1 && j == 1) || (i == k2 && j == len(au.packets)-1) {
				continue
			}
			lossy = append(lossy, pk)
		}
	}
	// Reorder neighbours as well: within the window that is harmless.
	for i := 3; i+1 < len(lossy); i += 7 {
		lossy[i], lossy[i+1] = lossy[i+1], lossy[i]
	}
	d = Depacketizer{}
	got, errs = run(&d, lossy)
	checkDelivered(t, got, aus, map[int]bool{k1: true, k2: true})
	if flat := flatten(errs); len(flat) != 2 || !errors.Is(flat[0], ErrPacketLoss) || !errors.Is(flat[1], ErrPacketLoss) {
		t.Fatalf("errors %v", errs)
	}
	if st := d.Stats(); st.PacketsLost != 2 || st.AccessUnitsDropped != 2 || st.AccessUnits != uint64(len(aus)-2) {
		t.Errorf("stats %+v", st)
	}
}

func TestDepacketizerMalformed(t *testing.T) {
	for name, payloads := range map[string][][]byte{
		"short":            {{0x02}},
		"forbidden bit":    {{0x82, 0x01, 0xaf}},
		"ap truncated":     {{0x60, 0x01, 0x00, 0x09, 0x02}},
		"ap tiny unit":     {{0x60, 0x01, 0x00, 0x01, 0x02}},
		"fu no start":      {{0x62, 0x01, 0x01, 0xaa}},
		"fu start and end": {{0x62, 0x01, 0xc1, 0xaa}},
		"fu of an fu":      {{0x62, 0x01, 0xb1, 0xaa}},
		"fu interrupted":   {{0x62, 0x01, 0x81, 0xaa}, {0x02, 0x01, 0xaf}},
		"paci":             {{0x64, 0x01, 0x00, 0x00}},
		"undefined":        {{0x7e, 0x01, 0x00}},
	} {
		t.Run(name, func(t *testing.T) {
			var d Depacketizer
			var err error
			for i, p := range payloads {
				_, e := d.Push(&rtp.Packet{Header: rtp.Header{SequenceNumber: uint16(i), Timestamp: 1,
					Marker: i == len(payloads)-1}, Payload: p})
				err = errors.Join(err, e)
			}
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v", err)
			}
			aus, err := d.Push(&rtp.Packet{Header: rtp.Header{SequenceNumber: uint16(len(payloads)), Timestamp: 2,
				Marker: true}, Payload: []byte{0x26, 0x01, 0xaf}})
			if err != nil || len(aus) != 1 {
				t.Fatalf("next unit: %v %v", aus, err)
			}
		})
	}
}

func FuzzDepacketizer(f *testing.F) {
	f.Add([]byte{0, 3, 1, 0x26, 0x01, 0xaf})
	f.Add([]byte{0, 5, 0, 0x62, 0x01, 0x93, 1, 2, 0, 4, 1, 0x62, 0x01, 0x53, 3})
	f.Add([]byte{0, 10, 1, 0x60, 0x01, 0, 3, 0x40, 0x01, 0x0c, 0, 1, 0x42})
	f.Fuzz(func(t *testing.T, in []byte) {
		d := Depacketizer{MaxAccessUnitSize: 4096, MaxNALUs: 8, ReorderWindow: 4}
		seq, ts := uint16(0), uint32(0)
		for len(in) >= 3 {
			n := min(int(binary.BigEndian.Uint16(in)), len(in)-3)
			flags := in[2]
			payload := in[3 : 3+n]
			in = in[3+n:]
			seq += 1 + uint16(flags>>4&3)
			if flags&2 != 0 {
				ts += 3000
			}
			aus, _ := d.Push(&rtp.Packet{Header: rtp.Header{SequenceNumber: seq, Timestamp: ts, Marker: flags&1 != 0},
				Payload: payload})
			for _, au := range aus {
				size := 0
				for _, nalu := range au.NALUs {
					if len(nalu) < 2 {
						t.Fatal("NAL unit without a header delivered")
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
