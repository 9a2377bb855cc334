// Package bits reads the bit-level syntax of H.264 and H.265 parameter sets
// and slice headers: fixed-width fields, Exp-Golomb codes and the removal of
// emulation-prevention bytes. It exists so the h264 and h265 parsers share
// one bounds-checked reader instead of two.
package bits

import "errors"

// ErrShort is returned when a field runs past the end of the data.
var ErrShort = errors.New("bits: data too short")

// ErrExpGolomb is returned for an Exp-Golomb code longer than 32 bits, which
// no conforming H.264/H.265 field uses.
var ErrExpGolomb = errors.New("bits: invalid Exp-Golomb code")

// Reader reads MSB-first from a raw byte sequence payload (RBSP). Its error
// is sticky: after the first failure every read returns zero and Err reports
// the failure, so parsers can read a run of fields and check once.
type Reader struct {
	buf []byte
	pos int // in bits
	err error
}

// NewReader reads from rbsp, which must already be free of emulation
// prevention bytes (see Unescape).
func NewReader(rbsp []byte) *Reader { return &Reader{buf: rbsp} }

// Err returns the first error met, if any.
func (r *Reader) Err() error { return r.err }

// Pos returns the number of bits consumed.
func (r *Reader) Pos() int { return r.pos }

// Left returns the number of bits not yet consumed.
func (r *Reader) Left() int { return len(r.buf)*8 - r.pos }

func (r *Reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

// U reads an n-bit unsigned field, 0 <= n <= 64.
func (r *Reader) U(n int) uint64 {
	if r.err != nil {
		return 0
	}
	if n < 0 || n > 64 || n > r.Left() {
		r.fail(ErrShort)
		return 0
	}
	var v uint64
	for n > 0 {
		byteIdx := r.pos >> 3
		bitOff := r.pos & 7
		avail := 8 - bitOff
		take := min(avail, n)
		b := uint64(r.buf[byteIdx]) >> (avail - take) & (1<<take - 1)
		v = v<<take | b
		r.pos += take
		n -= take
	}
	return v
}

// U32 reads an n-bit unsigned field, n <= 32.
func (r *Reader) U32(n int) uint32 { return uint32(r.U(min(n, 32))) }

// Flag reads one bit.
func (r *Reader) Flag() bool { return r.U(1) == 1 }

// Skip discards n bits.
func (r *Reader) Skip(n int) {
	if r.err != nil {
		return
	}
	if n < 0 || n > r.Left() {
		r.fail(ErrShort)
		return
	}
	r.pos += n
}

// UE reads an unsigned Exp-Golomb code, ue(v).
func (r *Reader) UE() uint32 {
	zeros := 0
	for !r.Flag() {
		if r.err != nil {
			return 0
		}
		zeros++
		if zeros > 31 {
			r.fail(ErrExpGolomb)
			return 0
		}
	}
	if zeros == 0 {
		return 0
	}
	v := uint64(1)<<zeros - 1 + r.U(zeros)
	if v > 0xFFFFFFFF {
		r.fail(ErrExpGolomb)
		return 0
	}
	return uint32(v)
}

// SE reads a signed Exp-Golomb code, se(v).
func (r *Reader) SE() int32 {
	k := int64(r.UE())
	if k&1 == 1 {
		return int32((k + 1) / 2)
	}
	return int32(-k / 2)
}

// MoreRBSPData reports whether syntax remains before the rbsp_trailing_bits
// (a final 1 bit followed by zero bits).
func (r *Reader) MoreRBSPData() bool {
	if r.err != nil || r.Left() <= 0 {
		return false
	}
	// Find the last set bit in the buffer: everything before it is payload.
	last := len(r.buf) - 1
	for last >= 0 && r.buf[last] == 0 {
		last--
	}
	if last < 0 {
		return false
	}
	b := r.buf[last]
	bit := 7
	for b&1 == 0 {
		b >>= 1
		bit--
	}
	return r.pos < last*8+bit
}

// Unescape returns the RBSP of a NAL unit payload: every 0x03 that follows
// two zero bytes (emulation_prevention_three_byte) is removed. It returns
// the input itself when there is nothing to remove.
func Unescape(ebsp []byte) []byte {
	first := -1
	for i := 2; i < len(ebsp); i++ {
		if ebsp[i] == 3 && ebsp[i-1] == 0 && ebsp[i-2] == 0 {
			first = i
			break
		}
	}
	if first < 0 {
		return ebsp
	}
	out := make([]byte, 0, len(ebsp))
	out = append(out, ebsp[:first]...)
	zeros := 0
	for i := first + 1; i < len(ebsp); i++ {
		c := ebsp[i]
		if zeros >= 2 && c == 3 {
			zeros = 0
			continue
		}
		out = append(out, c)
		if c == 0 {
			zeros++
		} else {
			zeros = 0
		}
	}
	return out
}
