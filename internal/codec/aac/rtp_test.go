package aac

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/pion/rtp"

	"github.com/backchannel/backchannel/internal/codec/internal/mediatest"
)

// packetize3640 is a test packetizer for RFC 3640 AAC-hbr (13/3/3 AU
// headers): it packs whole access units into packets up to mtu bytes and
// fragments an access unit too large for one packet. It returns the
// packets and, for each AU, the index of its last packet.
func packetize3640(aus [][]byte, mtu int, seq uint16, ts uint32) ([]*rtp.Packet, []int) {
	var pkts []*rtp.Packet
	lastPacket := make([]int, len(aus))
	emit := func(sizes []int, data []byte, tsOff int, marker bool) {
		p := make([]byte, 2, 2+2*len(sizes)+len(data))
		binary.BigEndian.PutUint16(p, uint16(16*len(sizes)))
		for _, s := range sizes {
			p = binary.BigEndian.AppendUint16(p, uint16(s<<3)) // AU-Index(-delta) 0
		}
		p = append(p, data...)
		pkts = append(pkts, &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq,
			Timestamp: ts + uint32(tsOff)*1024, Marker: marker}, Payload: p})
		seq++
	}
	for i := 0; i < len(aus); {
		if 2+2+len(aus[i]) > mtu { // fragment it
			au := aus[i]
			for off := 0; off < len(au); {
				n := min(mtu-4, len(au)-off)
				emit([]int{len(au)}, au[off:off+n], i, off+n == len(au))
				off += n
			}
			lastPacket[i] = len(pkts) - 1
			i++
			continue
		}
		var sizes []int
		var data []byte
		first := i
		for i < len(aus) && 2+2*(len(sizes)+1)+len(data)+len(aus[i]) <= mtu {
			sizes = append(sizes, len(aus[i]))
			data = append(data, aus[i]...)
			lastPacket[i] = len(pkts)
			i++
		}
		emit(sizes, data, first, true)
	}
	return pkts, lastPacket
}

func ffmpegAUs(t *testing.T) [][]byte {
	_, data := mediatest.Encode(t, "a.aac", "-f", "lavfi", "-i", "sine=f=440:sample_rate=48000", "-ac", "2",
		"-t", "2", "-c:a", "aac", "-b:a", "128k")
	frames, err := SplitADTS(data)
	if err != nil {
		t.Fatal(err)
	}
	var aus [][]byte
	for _, f := range frames {
		aus = append(aus, f.AU)
	}
	return aus
}

func depacketize(t *testing.T, d *Depacketizer, pkts []*rtp.Packet) ([]AccessUnit, []error) {
	t.Helper()
	var got []AccessUnit
	var errs []error
	for _, p := range pkts {
		aus, err := d.Push(p)
		if err != nil {
			errs = append(errs, err)
		}
		got = append(got, aus...)
	}
	return got, errs
}

func check(t *testing.T, got []AccessUnit, aus [][]byte, ts uint32, missing map[int]bool) {
	t.Helper()
	j := 0
	for i, au := range aus {
		if missing[i] {
			continue
		}
		if j >= len(got) {
			t.Fatalf("%d AUs delivered, AU %d missing", len(got), i)
		}
		if !bytes.Equal(got[j].Data, au) || got[j].PTS != int64(ts)+int64(i)*1024 {
			t.Fatalf("AU %d (source %d): %d bytes pts %d", j, i, len(got[j].Data), got[j].PTS)
		}
		j++
	}
	if j != len(got) {
		t.Fatalf("%d AUs delivered, want %d", len(got), j)
	}
}

func TestDepacketizerRoundTrip(t *testing.T) {
	aus := ffmpegAUs(t)
	for _, mtu := range []int{1400, 200} { // several AUs per packet; fragmented AUs
		pkts, _ := packetize3640(aus, mtu, 65530, 1000)
		var d Depacketizer
		got, errs := depacketize(t, &d, pkts)
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		check(t, got, aus, 1000, nil)
	}
}

func TestDepacketizerLossAndReorder(t *testing.T) {
	aus := ffmpegAUs(t)
	// Packets of several whole AUs: losing one costs exactly its AUs.
	pkts, last := packetize3640(aus, 1400, 0, 0)
	const lostPacket = 10
	missing := map[int]bool{}
	for i := range aus {
		if last[i] == lostPacket {
			missing[i] = true
		}
	}
	if len(missing) < 2 {
		t.Fatalf("packet %d holds %d AUs", lostPacket, len(missing))
	}
	lossy := append(append([]*rtp.Packet(nil), pkts[:lostPacket]...), pkts[lostPacket+1:]...)
	for i := 3; i+1 < len(lossy); i += 5 { // and reorder neighbours
		lossy[i], lossy[i+1] = lossy[i+1], lossy[i]
	}
	var d Depacketizer
	got, errs := depacketize(t, &d, lossy)
	check(t, got, aus, 0, missing)
	if len(errs) != 0 || d.Stats().PacketsLost != 1 {
		t.Errorf("errors %v stats %+v", errs, d.Stats())
	}

	// AUs fragmented over 3+ packets: losing a middle fragment, or the
	// first, drops that AU only.
	pkts, last = packetize3640(aus, 150, 0, 0)
	const frag = 20
	first := last[frag-1] + 1
	if last[frag]-first < 2 {
		t.Fatalf("AU %d spans %d packets", frag, last[frag]-first+1)
	}
	for _, drop := range []int{first + 1, first} {
		lossy := append(append([]*rtp.Packet(nil), pkts[:drop]...), pkts[drop+1:]...)
		var d Depacketizer
		got, errs := depacketize(t, &d, lossy)
		check(t, got, aus, 0, map[int]bool{frag: true})
		if len(errs) != 1 || !errors.Is(errs[0], ErrPacketLoss) {
			t.Errorf("errors %v", errs)
		}
		if st := d.Stats(); st.PacketsLost != 1 || st.AccessUnitsDropped != 1 {
			t.Errorf("stats %+v", st)
		}
	}
}

func TestDepacketizerMalformed(t *testing.T) {
	for name, payloads := range map[string][][]byte{
		"short":           {{0x00}},
		"no headers":      {{0x00, 0x00}},
		"headers overrun": {{0x00, 0x20, 0x00, 0x08}},
		"sizes overrun":   {{0x00, 0x20, 0x00, 0x08, 0x00, 0x08, 1}},
		"interleaved":     {{0x00, 0x10, 0x00, 0x09, 1}},
		"zero size":       {{0x00, 0x10, 0x00, 0x00}},
		"fragment short":  {{0x00, 0x10, 0x00, 0x28, 1, 2}},
		"fragment over":   {{0x00, 0x10, 0x00, 0x18, 1, 2}, {0x00, 0x10, 0x00, 0x18, 3, 4}},
	} {
		t.Run(name, func(t *testing.T) {
			var d Depacketizer
			var err error
			for i, p := range payloads {
				_, e := d.Push(&rtp.Packet{Header: rtp.Header{SequenceNumber: uint16(i), Timestamp: 0, Marker: i == len(payloads)-1}, Payload: p})
				err = errors.Join(err, e)
			}
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v", err)
			}
			aus, err := d.Push(&rtp.Packet{Header: rtp.Header{SequenceNumber: uint16(len(payloads)), Timestamp: 2048, Marker: true},
				Payload: []byte{0x00, 0x10, 0x00, 0x08, 0xaa}})
			if err != nil || len(aus) != 1 || aus[0].PTS != 2048 {
				t.Fatalf("next: %v %v", aus, err)
			}
		})
	}
	d := Depacketizer{MaxAUSize: 100}
	if _, err := d.Push(&rtp.Packet{Payload: []byte{0x00, 0x10, 0x10, 0x00, 1}}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversized AU: %v", err)
	}
}

func FuzzDepacketizer(f *testing.F) {
	f.Add([]byte{0, 5, 1, 0x00, 0x10, 0x00, 0x08, 0xaa})
	f.Add([]byte{0, 6, 0, 0x00, 0x10, 0x00, 0x20, 1, 2, 0, 6, 1, 0x00, 0x10, 0x00, 0x20, 3, 4})
	f.Fuzz(func(t *testing.T, in []byte) {
		d := Depacketizer{MaxAUSize: 2048, ReorderWindow: 4}
		seq, ts := uint16(0), uint32(0)
		for len(in) >= 3 {
			n := min(int(binary.BigEndian.Uint16(in)), len(in)-3)
			flags := in[2]
			payload := in[3 : 3+n]
			in = in[3+n:]
			seq += 1 + uint16(flags>>4&3)
			if flags&2 != 0 {
				ts += 1024
			}
			aus, _ := d.Push(&rtp.Packet{Header: rtp.Header{SequenceNumber: seq, Timestamp: ts, Marker: flags&1 != 0}, Payload: payload})
			for _, au := range aus {
				if len(au.Data) == 0 || len(au.Data) > 2048 {
					t.Fatalf("AU of %d bytes", len(au.Data))
				}
			}
			if len(d.frag) > 2048 {
				t.Fatalf("buffered %d bytes", len(d.frag))
			}
		}
	})
}
