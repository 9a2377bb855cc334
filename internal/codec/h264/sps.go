package h264

import (
	"errors"
	"fmt"

	"github.com/backchannel/backchannel/internal/codec/internal/bits"
)

// ErrNotSPS is returned when ParseSPS is given another kind of NAL unit.
var ErrNotSPS = errors.New("h264: not a sequence parameter set")

// SPS holds the fields of a sequence parameter set (H.264 7.3.2.1.1) that a
// muxer or player needs. Width and Height are the displayed size, after
// cropping.
type SPS struct {
	ProfileIDC      uint8
	ConstraintFlags uint8 // constraint_set0..5 flags and reserved bits, as coded
	LevelIDC        uint8
	ID              uint32

	ChromaFormatIDC        uint32 // 1 (4:2:0) unless coded
	SeparateColourPlane    bool
	BitDepthLuma           uint32
	BitDepthChroma         uint32
	Log2MaxFrameNum        uint32
	PicOrderCntType        uint32
	Log2MaxPicOrderCntLsb  uint32 // POC type 0 only
	DeltaPicOrderAlwaysZro bool   // POC type 1 only
	MaxNumRefFrames        uint32
	FrameMbsOnly           bool

	Width, Height int

	// VUI timing (E.2.1). Frame rate = TimeScale / (2 * NumUnitsInTick).
	TimingInfoPresent bool
	NumUnitsInTick    uint32
	TimeScale         uint32
	FixedFrameRate    bool

	// VUI bitstream restriction: the bumping information a DTS needs.
	BitstreamRestriction bool
	MaxNumReorderFrames  uint32
	MaxDecFrameBuffering uint32
}

// highProfiles lists the profile_idc values whose SPS codes chroma format,
// bit depth and scaling matrices.
func highProfile(p uint8) bool {
	switch p {
	case 100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135:
		return true
	}
	return false
}

// ParseSPS parses a sequence parameter set NAL unit, header included.
func ParseSPS(nalu []byte) (*SPS, error) {
	if TypeOf(nalu) != NALUTypeSPS {
		return nil, ErrNotSPS
	}
	r := bits.NewReader(bits.Unescape(nalu[1:]))
	s := &SPS{ChromaFormatIDC: 1, BitDepthLuma: 8, BitDepthChroma: 8}
	s.ProfileIDC = uint8(r.U(8))
	s.ConstraintFlags = uint8(r.U(8))
	s.LevelIDC = uint8(r.U(8))
	s.ID = r.UE()
	if s.ID > 31 {
		return nil, fmt.Errorf("h264: SPS id %d out of range", s.ID)
	}
	if highProfile(s.ProfileIDC) {
		s.ChromaFormatIDC = r.UE()
		if s.ChromaFormatIDC > 3 {
			return nil, fmt.Errorf("h264: chroma_format_idc %d out of range", s.ChromaFormatIDC)
		}
		if s.ChromaFormatIDC == 3 {
			s.SeparateColourPlane = r.Flag()
		}
		s.BitDepthLuma = r.UE() + 8
		s.BitDepthChroma = r.UE() + 8
		if s.BitDepthLuma > 14 || s.BitDepthChroma > 14 {
			return nil, errors.New("h264: bit depth out of range")
		}
		r.Skip(1)     // qpprime_y_zero_transform_bypass_flag
		if r.Flag() { // seq_scaling_matrix_present_flag
			lists := 8
			if s.ChromaFormatIDC == 3 {
				lists = 12
			}
			for i := 0; i < lists; i++ {
				if r.Flag() {
					size := 16
					if i >= 6 {
						size = 64
					}
					skipScalingList(r, size)
				}
			}
		}
	}
	s.Log2MaxFrameNum = r.UE() + 4
	if s.Log2MaxFrameNum > 16 {
		return nil, errors.New("h264: log2_max_frame_num out of range")
	}
	s.PicOrderCntType = r.UE()
	switch s.PicOrderCntType {
	case 0:
		s.Log2MaxPicOrderCntLsb = r.UE() + 4
		if s.Log2MaxPicOrderCntLsb > 16 {
			return nil, errors.New("h264: log2_max_pic_order_cnt_lsb out of range")
		}
	case 1:
		s.DeltaPicOrderAlwaysZro = r.Flag()
		r.SE() // offset_for_non_ref_pic
		r.SE() // offset_for_top_to_bottom_field
		n := r.UE()
		if n > 255 {
			return nil, errors.New("h264: num_ref_frames_in_pic_order_cnt_cycle out of range")
		}
		for i := uint32(0); i < n && r.Err() == nil; i++ {
			r.SE() // offset_for_ref_frame[i]
		}
	case 2:
	default:
		return nil, fmt.Errorf("h264: pic_order_cnt_type %d out of range", s.PicOrderCntType)
	}
	s.MaxNumRefFrames = r.UE()
	r.Skip(1) // gaps_in_frame_num_value_allowed_flag
	widthMbs := uint64(r.UE()) + 1
	heightMapUnits := uint64(r.UE()) + 1
	s.FrameMbsOnly = r.Flag()
	if !s.FrameMbsOnly {
		r.Skip(1) // mb_adaptive_frame_field_flag
	}
	r.Skip(1) // direct_8x8_inference_flag
	var cropL, cropR, cropT, cropB uint64
	if r.Flag() {
		cropL, cropR, cropT, cropB = uint64(r.UE()), uint64(r.UE()), uint64(r.UE()), uint64(r.UE())
	}
	vui := r.Flag()
	if err := r.Err(); err != nil {
		return nil, fmt.Errorf("h264: SPS: %w", err)
	}

	frameHeightMbs := heightMapUnits
	if !s.FrameMbsOnly {
		frameHeightMbs *= 2
	}
	// Sizes beyond the largest level (8192x4320 at level 6.2 is 139264
	// macroblocks) are not real streams.
	if widthMbs > 1024 || frameHeightMbs > 1024 {
		return nil, errors.New("h264: picture size out of range")
	}
	cropUnitX, cropUnitY := uint64(1), uint64(1)
	if !s.FrameMbsOnly {
		cropUnitY = 2
	}
	if chromaArrayType := s.ChromaFormatIDC; !s.SeparateColourPlane && chromaArrayType != 0 {
		subW, subH := uint64(2), uint64(2)
		switch chromaArrayType {
		case 2:
			subH = 1
		case 3:
			subW, subH = 1, 1
		}
		cropUnitX = subW
		cropUnitY *= subH
	}
	w := widthMbs * 16
	h := frameHeightMbs * 16
	cx := cropUnitX * (cropL + cropR)
	cy := cropUnitY * (cropT + cropB)
	if cx >= w || cy >= h {
		return nil, errors.New("h264: cropping exceeds the picture")
	}
	s.Width, s.Height = int(w-cx), int(h-cy)

	if vui {
		// A damaged VUI does not make the SPS unusable: keep what parsed.
		parseVUI(r, s)
	}
	return s, nil
}

func skipScalingList(r *bits.Reader, size int) {
	last, next := int32(8), int32(8)
	for j := 0; j < size && r.Err() == nil; j++ {
		if next != 0 {
			delta := r.SE()
			next = (last + delta + 256) % 256
		}
		if next != 0 {
			last = next
		}
	}
}

func parseVUI(r *bits.Reader, s *SPS) {
	if r.Flag() { // aspect_ratio_info_present_flag
		if r.U(8) == 255 { // Extended_SAR
			r.Skip(32)
		}
	}
	if r.Flag() { // overscan_info_present_flag
		r.Skip(1)
	}
	if r.Flag() { // video_signal_type_present_flag
		r.Skip(4)
		if r.Flag() { // colour_description_present_flag
			r.Skip(24)
		}
	}
	if r.Flag() { // chroma_loc_info_present_flag
		r.UE()
		r.UE()
	}
	if r.Flag() { // timing_info_present_flag
		units := uint32(r.U(32))
		scale := uint32(r.U(32))
		fixed := r.Flag()
		if r.Err() != nil {
			return
		}
		if units > 0 && scale > 0 {
			s.TimingInfoPresent, s.NumUnitsInTick, s.TimeScale, s.FixedFrameRate = true, units, scale, fixed
		}
	}
	nalHRD := r.Flag()
	if nalHRD {
		skipHRD(r)
	}
	vclHRD := r.Flag()
	if vclHRD {
		skipHRD(r)
	}
	if nalHRD || vclHRD {
		r.Skip(1) // low_delay_hrd_flag
	}
	r.Skip(1)     // pic_struct_present_flag
	if r.Flag() { // bitstream_restriction_flag
		r.Skip(1) // motion_vectors_over_pic_boundaries_flag
		r.UE()    // max_bytes_per_pic_denom
		r.UE()    // max_bits_per_mb_denom
		r.UE()    // log2_max_mv_length_horizontal
		r.UE()    // log2_max_mv_length_vertical
		reorder := r.UE()
		dpb := r.UE()
		if r.Err() == nil && reorder <= 16 && dpb <= 16 {
			s.BitstreamRestriction, s.MaxNumReorderFrames, s.MaxDecFrameBuffering = true, reorder, dpb
		}
	}
}

func skipHRD(r *bits.Reader) {
	cpbCnt := r.UE() + 1
	if cpbCnt > 32 {
		r.Skip(r.Left() + 1) // force the sticky error
		return
	}
	r.Skip(8) // bit_rate_scale, cpb_size_scale
	for i := uint32(0); i < cpbCnt && r.Err() == nil; i++ {
		r.UE()
		r.UE()
		r.Skip(1)
	}
	r.Skip(20) // four 5-bit delay/offset lengths
}

// FrameRate returns the frame rate the VUI timing declares, or 0 when absent.
func (s *SPS) FrameRate() float64 {
	if !s.TimingInfoPresent {
		return 0
	}
	return float64(s.TimeScale) / (2 * float64(s.NumUnitsInTick))
}

// CodecString returns the RFC 6381 codecs parameter, avc1.PPCCLL, used by
// HLS CODECS= and MSE.
func (s *SPS) CodecString() string {
	return fmt.Sprintf("avc1.%02x%02x%02x", s.ProfileIDC, s.ConstraintFlags, s.LevelIDC)
}

// maxDpbMbs is MaxDpbMbs of Table A-1, by level_idc.
var maxDpbMbs = map[uint8]uint32{
	9: 396, 10: 396, 11: 900, 12: 2376, 13: 2376, 20: 2376, 21: 4752, 22: 8100,
	30: 8100, 31: 18000, 32: 20480, 40: 32768, 41: 32768, 42: 34816,
	50: 110400, 51: 184320, 52: 184320, 60: 696320, 61: 696320, 62: 696320,
}

// ReorderFrames returns how many frames may precede any frame in decode
// order and follow it in output order: max_num_reorder_frames when the VUI
// codes it; 0 when the stream cannot reorder (POC type 2, intra-only
// profiles, or Baseline, whose encoders do not reorder in practice);
// otherwise the DPB size the level allows (E.2.1 inference), capped at 16.
func (s *SPS) ReorderFrames() int {
	if s.BitstreamRestriction {
		return int(s.MaxNumReorderFrames)
	}
	if s.PicOrderCntType == 2 || s.ProfileIDC == 66 {
		return 0
	}
	if s.ConstraintFlags&0x10 != 0 { // constraint_set3: intra profiles
		switch s.ProfileIDC {
		case 44, 86, 100, 110, 122, 244:
			return 0
		}
	}
	mbs := uint32(((s.Width + 15) / 16) * ((s.Height + 15) / 16))
	if mbs == 0 {
		return 16
	}
	level := s.LevelIDC
	if level == 11 && s.ConstraintFlags&0x10 != 0 {
		level = 9 // level 1b
	}
	dpb, ok := maxDpbMbs[level]
	if !ok {
		return 16
	}
	return int(min(dpb/mbs, 16))
}
