package bits

import (
	"bytes"
	"errors"
	"testing"
)

func TestReader(t *testing.T) {
	// 1 | 010 | 011 | 00100 | 00101 | 0001000 | 101 0... :
	// flag, ue 1, ue 2, ue 3, se -2, ue 7, 3 bits 5.
	r := NewReader([]byte{0b10100110, 0b01000010, 0b10001000, 0b10100000})
	if !r.Flag() || r.UE() != 1 || r.UE() != 2 || r.UE() != 3 || r.SE() != -2 || r.UE() != 7 || r.U(3) != 5 {
		t.Fatalf("fields wrong, err %v", r.Err())
	}
	if r.Pos() != 27 || r.Left() != 5 || r.Err() != nil {
		t.Fatalf("pos %d left %d", r.Pos(), r.Left())
	}
	r.Skip(6)
	if !errors.Is(r.Err(), ErrShort) || r.U(1) != 0 {
		t.Fatal("over-read not sticky")
	}
	if v := NewReader([]byte{0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x11}).U(64); v != 0x123456789abcdef0 {
		t.Fatalf("U(64) = %x", v)
	}
	if r := NewReader(make([]byte, 5)); r.UE() != 0 || !errors.Is(r.Err(), ErrExpGolomb) {
		t.Fatalf("33 leading zeros: %v", r.Err())
	}
	// 31 leading zeros, the largest code: 2^31-1 + (2^31-1).
	if r := NewReader([]byte{0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff}); r.UE() != 0xFFFFFFFE || r.Err() != nil {
		t.Fatalf("31 leading zeros: %v", r.Err())
	}
	if r := NewReader([]byte{0xff}); r.U32(40) != 0 || r.Err() == nil {
		t.Fatal("U32 past the end")
	}
}

func TestMoreRBSPData(t *testing.T) {
	r := NewReader([]byte{0b10110000}) // 1 0 1 then trailing 1 0000
	r.Skip(2)
	if !r.MoreRBSPData() {
		t.Fatal("data before trailing bits")
	}
	r.Skip(1)
	if r.MoreRBSPData() {
		t.Fatal("trailing bits taken for data")
	}
	if NewReader([]byte{0, 0}).MoreRBSPData() {
		t.Fatal("all zeros")
	}
}

func TestUnescape(t *testing.T) {
	for _, c := range []struct{ in, want []byte }{
		{[]byte{1, 2, 3}, []byte{1, 2, 3}},
		{[]byte{0, 0, 3, 1}, []byte{0, 0, 1}},
		{[]byte{0, 0, 3, 0, 0, 3}, []byte{0, 0, 0, 0}},
		{[]byte{0, 0, 3, 3}, []byte{0, 0, 3}},
		{[]byte{0, 3, 0, 0, 3, 0}, []byte{0, 3, 0, 0, 0}},
	} {
		if got := Unescape(c.in); !bytes.Equal(got, c.want) {
			t.Errorf("Unescape(%x) = %x, want %x", c.in, got, c.want)
		}
	}
}
