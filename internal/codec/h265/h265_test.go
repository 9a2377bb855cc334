package h265

import (
	"bytes"
	"testing"
)

func TestTypes(t *testing.T) {
	if TypeOf([]byte{0x26, 0x01}) != NALUTypeIDRWRADL || TypeOf([]byte{0x26}) != 63 ||
		!NALUTypeCRA.IsIRAP() || NALUTypeTrailR.IsIRAP() || !NALUTypeTrailN.IsVCL() || NALUTypeVPS.IsVCL() ||
		NALUTypeFU.String() != "FU" || NALUType(60).String() != "NALUType(60)" {
		t.Error("type helpers wrong")
	}
	if !IsKeyframe([][]byte{{0x40, 0x01}, {0x2a, 0x01, 0x80}}) || IsKeyframe([][]byte{{0x02, 0x01, 0x80}}) {
		t.Error("IsKeyframe wrong")
	}
}

func TestSplitAccessUnits(t *testing.T) {
	vps, sps, pps := []byte{0x40, 0x01}, []byte{0x42, 0x01}, []byte{0x44, 0x01}
	sei, suffix := []byte{0x4e, 0x01, 5}, []byte{0x50, 0x01, 5}
	idr := []byte{0x26, 0x01, 0xaf}
	idr2 := []byte{0x26, 0x01, 0x2f} // second slice segment
	p1, p2 := []byte{0x02, 0x01, 0xd0}, []byte{0x02, 0x01, 0xd1}
	got := SplitAccessUnits([][]byte{vps, sps, pps, sei, idr, idr2, suffix, p1, sei, p2})
	want := [][][]byte{{vps, sps, pps, sei, idr, idr2, suffix}, {p1}, {sei, p2}}
	if len(got) != len(want) {
		t.Fatalf("%d access units", len(got))
	}
	for i := range want {
		if len(got[i]) != len(want[i]) {
			t.Fatalf("AU %d: %d units", i, len(got[i]))
		}
		for j := range want[i] {
			if !bytes.Equal(got[i][j], want[i][j]) {
				t.Errorf("AU %d unit %d", i, j)
			}
		}
	}
}

func TestFMTP(t *testing.T) {
	f, err := ParseFMTP("sprop-vps=QAEMAf//AWAAAAMAkAAAAwAAAwA/lZgJ; sprop-sps=QgEBAWAAAAMAkAAAAwAAAwA/oAUiAXHJWWVmkkyvAWgIAAADAAgAAAMAyEA=;sprop-pps=RAHBcrRiQA==")
	if err != nil {
		t.Fatal(err)
	}
	if TypeOf(f.VPS) != NALUTypeVPS || TypeOf(f.SPS) != NALUTypeSPS || TypeOf(f.PPS) != NALUTypePPS || f.MaxDONDiff != 0 {
		t.Fatalf("fmtp %+v", f)
	}
	if s, err := ParseSPS(f.SPS); err != nil || s.Width != 650 {
		t.Fatalf("sprop SPS: %v %v", s, err)
	}
	if f, err := ParseFMTP("sprop-max-don-diff=2"); err != nil || f.MaxDONDiff != 2 {
		t.Fatalf("max-don-diff: %+v %v", f, err)
	}
	for _, bad := range []string{"sprop-max-don-diff=x", "sprop-sps=!!"} {
		if _, err := ParseFMTP(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestAVCCAndAnnexB(t *testing.T) {
	nalus := [][]byte{{0x40, 0x01, 0x0c}, {0x26, 0x01, 0xaf}}
	if got := AppendAVCC(nil, nalus); !bytes.Equal(got, []byte{0, 0, 0, 3, 0x40, 0x01, 0x0c, 0, 0, 0, 3, 0x26, 0x01, 0xaf}) {
		t.Errorf("AppendAVCC = %x", got)
	}
	if got := SplitAnnexB([]byte{0, 0, 1, 0x40, 0x01, 0x0c, 0, 0, 0, 1, 0x26, 0x01, 0xaf}); len(got) != 2 || !bytes.Equal(got[1], nalus[1]) {
		t.Errorf("SplitAnnexB = %x", got)
	}
}
