// Package fmp4 writes and reads fragmented MP4 (ISO/IEC 14496-12) in the
// CMAF shape (ISO/IEC 23000-19) that LL-HLS players and MSE expect: an init
// segment (ftyp + moov with one track per stream, avc1/hvc1/mp4a/Opus
// sample entries and mvex) and media fragments (moof + mdat, with tfdt
// and version-1 trun carrying signed composition offsets).
//
// Init and Fragment are the box-level building blocks; Muxer queues timed
// samples of several tracks and cuts them into fragments, which is what a
// segmenter or a recorder needs. The reader side (ReadBoxes,
// ParseFragments, ParseInit) walks the same files back for tests and VOD
// replay. docs/fmp4.md describes the layout and the choices.
package fmp4

import (
	"encoding/binary"
	"errors"
	"math"
)

// boxWriter builds nested boxes in one buffer, patching each box's size
// when it is closed.
type boxWriter struct {
	b     []byte
	stack []int
}

func (w *boxWriter) start(typ string) {
	w.stack = append(w.stack, len(w.b))
	w.b = append(w.b, 0, 0, 0, 0)
	w.b = append(w.b, typ...)
}

func (w *boxWriter) startFull(typ string, version uint8, flags uint32) {
	w.start(typ)
	w.u32(uint32(version)<<24 | flags&0xFFFFFF)
}

func (w *boxWriter) end() {
	s := w.stack[len(w.stack)-1]
	w.stack = w.stack[:len(w.stack)-1]
	binary.BigEndian.PutUint32(w.b[s:], uint32(len(w.b)-s))
}

func (w *boxWriter) u8(v uint8)      { w.b = append(w.b, v) }
func (w *boxWriter) u16(v uint16)    { w.b = binary.BigEndian.AppendUint16(w.b, v) }
func (w *boxWriter) u24(v uint32)    { w.b = append(w.b, byte(v>>16), byte(v>>8), byte(v)) }
func (w *boxWriter) u32(v uint32)    { w.b = binary.BigEndian.AppendUint32(w.b, v) }
func (w *boxWriter) u64(v uint64)    { w.b = binary.BigEndian.AppendUint64(w.b, v) }
func (w *boxWriter) zeros(n int)     { w.b = append(w.b, make([]byte, n)...) }
func (w *boxWriter) bytes(b []byte)  { w.b = append(w.b, b...) }
func (w *boxWriter) fourcc(s string) { w.b = append(w.b, s[:4]...) }

// unityMatrix is the identity transformation of mvhd and tkhd.
var unityMatrix = [9]uint32{0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000}

func (w *boxWriter) matrix() {
	for _, v := range unityMatrix {
		w.u32(v)
	}
}

// ErrTooLarge is returned for a fragment whose media data would not fit the
// 32-bit sizes and offsets of the boxes.
var ErrTooLarge = errors.New("fmp4: fragment too large")

const maxMdat = math.MaxInt32 - 8
