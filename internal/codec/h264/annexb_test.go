package h264

import (
	"bytes"
	"errors"
	"testing"
)

func TestSplitAnnexB(t *testing.T) {
	in := []byte{
		0xff, 0xee, // garbage before the first start code is ignored
		0, 0, 0, 1, 0x67, 1, 2, // 4-byte start code
		0, 0, 1, 0x68, 3, // 3-byte start code
		0, 0, 0, 0, 1, 0x65, 4, 0, 5, 0, 0, // zero_byte padding, trailing zeros
	}
	got := SplitAnnexB(in)
	want := [][]byte{{0x67, 1, 2}, {0x68, 3}, {0x65, 4, 0, 5}}
	if len(got) != len(want) {
		t.Fatalf("got %d units %x", len(got), got)
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Errorf("unit %d = %x, want %x", i, got[i], want[i])
		}
	}
	if SplitAnnexB([]byte{1, 2, 3}) != nil || SplitAnnexB(nil) != nil {
		t.Error("units found without a start code")
	}
	if again := SplitAnnexB(AppendAnnexB(nil, want)); len(again) != 3 || !bytes.Equal(again[2], want[2]) {
		t.Errorf("AppendAnnexB round trip: %x", again)
	}
}

func TestAVCC(t *testing.T) {
	nalus := [][]byte{{0x65, 1, 2, 3}, {0x06}}
	b := AppendAVCC(nil, nalus)
	want := []byte{0, 0, 0, 4, 0x65, 1, 2, 3, 0, 0, 0, 1, 0x06}
	if !bytes.Equal(b, want) || AVCCSize(nalus) != len(want) {
		t.Fatalf("AppendAVCC = %x", b)
	}
	got, err := SplitAVCC(b, 0)
	if err != nil || len(got) != 2 || !bytes.Equal(got[0], nalus[0]) || !bytes.Equal(got[1], nalus[1]) {
		t.Fatalf("SplitAVCC = %x, %v", got, err)
	}
	for _, bad := range [][]byte{{0, 0, 0}, {0, 0, 0, 5, 1}, {0xff, 0xff, 0xff, 0xff}} {
		if _, err := SplitAVCC(bad, 0); !errors.Is(err, ErrAVCC) {
			t.Errorf("SplitAVCC(%x) err = %v", bad, err)
		}
	}
	if _, err := SplitAVCC(make([]byte, 400), 10); !errors.Is(err, ErrAVCC) {
		t.Error("SplitAVCC ignored the unit limit")
	}
}

func TestSplitAccessUnits(t *testing.T) {
	sps, pps, sei := []byte{0x67, 0x42}, []byte{0x68, 0xce}, []byte{0x06, 0x05}
	idr1, idr2 := []byte{0x65, 0x88}, []byte{0x65, 0x01} // first_mb 0, then a second slice
	p1, p2 := []byte{0x41, 0x9a}, []byte{0x41, 0x9b}
	aud := []byte{0x09, 0xf0}
	in := [][]byte{sps, pps, sei, idr1, idr2, p1, aud, p2, p1}
	got := SplitAccessUnits(in)
	want := [][][]byte{{sps, pps, sei, idr1, idr2}, {p1}, {aud, p2}, {p1}}
	if len(got) != len(want) {
		t.Fatalf("got %d access units", len(got))
	}
	for i := range want {
		if len(got[i]) != len(want[i]) {
			t.Fatalf("AU %d has %d units, want %d", i, len(got[i]), len(want[i]))
		}
		for j := range want[i] {
			if !bytes.Equal(got[i][j], want[i][j]) {
				t.Errorf("AU %d unit %d = %x", i, j, got[i][j])
			}
		}
	}
	if !IsKeyframe(got[0]) || IsKeyframe(got[1]) {
		t.Error("IsKeyframe wrong")
	}
}

func TestNALUType(t *testing.T) {
	if TypeOf([]byte{0x65}) != NALUTypeIDR || TypeOf(nil) != 0 || NALUTypeFUA.String() != "FU-A" ||
		NALUType(31).String() != "NALUType(31)" || !NALUTypeNonIDR.IsVCL() || NALUTypeSEI.IsVCL() {
		t.Error("NAL unit type helpers wrong")
	}
}

func TestFMTP(t *testing.T) {
	f, err := ParseFMTP("packetization-mode=1; profile-level-id=42e01f;sprop-parameter-sets=Z0LAHtkApC/krARA,aM48gA==")
	if err != nil {
		t.Fatal(err)
	}
	if f.PacketizationMode != 1 || f.ProfileLevelID != "42e01f" {
		t.Errorf("fmtp = %+v", f)
	}
	if !bytes.Equal(f.SPS, []byte{0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa4, 0x2f, 0xe4, 0xac, 0x04, 0x40}) ||
		!bytes.Equal(f.PPS, []byte{0x68, 0xce, 0x3c, 0x80}) {
		t.Errorf("sprop: sps %x pps %x", f.SPS, f.PPS)
	}
	// Unpadded base64, as some cameras send it.
	sets, err := ParseSpropParameterSets("Z0LAHtkApC/krARA,aM48gA")
	if err != nil || len(sets) != 2 || !bytes.Equal(sets[1], f.PPS) {
		t.Errorf("unpadded sprop: %x %v", sets, err)
	}
	if _, err := ParseSpropParameterSets("not*base64"); err == nil {
		t.Error("bad base64 accepted")
	}
	if _, err := ParseFMTP("packetization-mode=7"); err == nil {
		t.Error("bad packetization-mode accepted")
	}
}
