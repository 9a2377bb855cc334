package h265

import (
	"errors"
	"fmt"
	mbits "math/bits"
	"strconv"
	"strings"

	"github.com/backchannel/backchannel/internal/codec/internal/bits"
)

// Errors of the parameter set parsers.
var (
	ErrNotVPS = errors.New("h265: not a video parameter set")
	ErrNotSPS = errors.New("h265: not a sequence parameter set")
	ErrNotPPS = errors.New("h265: not a picture parameter set")
)

// ProfileTierLevel is the general part of profile_tier_level() (7.3.3):
// what the hvcC box and the codec string carry.
type ProfileTierLevel struct {
	ProfileSpace uint8
	Tier         bool // high tier
	ProfileIDC   uint8
	// CompatibilityFlags holds general_profile_compatibility_flag[0..31]
	// as coded: flag[0] is the most significant bit.
	CompatibilityFlags uint32
	// ConstraintFlags holds the 48 bits from general_progressive_source_flag
	// on, as coded, in the low 48 bits.
	ConstraintFlags uint64
	LevelIDC        uint8
}

func parsePTL(r *bits.Reader, maxSubLayersMinus1 uint32) ProfileTierLevel {
	var p ProfileTierLevel
	p.ProfileSpace = uint8(r.U(2))
	p.Tier = r.Flag()
	p.ProfileIDC = uint8(r.U(5))
	p.CompatibilityFlags = uint32(r.U(32))
	p.ConstraintFlags = r.U(48)
	p.LevelIDC = uint8(r.U(8))
	var profilePresent, levelPresent [8]bool
	for i := uint32(0); i < maxSubLayersMinus1; i++ {
		profilePresent[i] = r.Flag()
		levelPresent[i] = r.Flag()
	}
	if maxSubLayersMinus1 > 0 {
		for i := maxSubLayersMinus1; i < 8; i++ {
			r.Skip(2) // reserved_zero_2bits
		}
	}
	for i := uint32(0); i < maxSubLayersMinus1; i++ {
		if profilePresent[i] {
			r.Skip(88)
		}
		if levelPresent[i] {
			r.Skip(8)
		}
	}
	return p
}

// CodecString returns the RFC 6381 codecs parameter for an hvc1 track,
// built per ISO/IEC 14496-15 E.3, e.g. "hvc1.1.6.L93.B0".
func (p ProfileTierLevel) CodecString() string {
	var b strings.Builder
	b.WriteString("hvc1.")
	if p.ProfileSpace > 0 {
		b.WriteByte('A' + p.ProfileSpace - 1)
	}
	b.WriteString(strconv.Itoa(int(p.ProfileIDC)))
	b.WriteByte('.')
	b.WriteString(strconv.FormatUint(uint64(mbits.Reverse32(p.CompatibilityFlags)), 16))
	b.WriteByte('.')
	if p.Tier {
		b.WriteByte('H')
	} else {
		b.WriteByte('L')
	}
	b.WriteString(strconv.Itoa(int(p.LevelIDC)))
	// The six constraint bytes, trailing zero bytes omitted.
	var cb [6]byte
	last := -1
	for i := range cb {
		cb[i] = byte(p.ConstraintFlags >> (40 - 8*i))
		if cb[i] != 0 {
			last = i
		}
	}
	for i := 0; i <= last; i++ {
		b.WriteByte('.')
		b.WriteString(strings.ToUpper(strconv.FormatUint(uint64(cb[i]), 16)))
	}
	return b.String()
}

// VPS holds the fields of a video parameter set (7.3.2.1) that matter here.
type VPS struct {
	ID                 uint8
	MaxSubLayersMinus1 uint32
	TemporalIDNesting  bool
	PTL                ProfileTierLevel
	TimingInfoPresent  bool
	NumUnitsInTick     uint32
	TimeScale          uint32
}

func rbsp(nalu []byte, want NALUType, errWrong error) (*bits.Reader, error) {
	if TypeOf(nalu) != want {
		return nil, errWrong
	}
	return bits.NewReader(bits.Unescape(nalu[2:])), nil
}

// ParseVPS parses a video parameter set NAL unit, header included.
func ParseVPS(nalu []byte) (*VPS, error) {
	r, err := rbsp(nalu, NALUTypeVPS, ErrNotVPS)
	if err != nil {
		return nil, err
	}
	v := &VPS{}
	v.ID = uint8(r.U(4))
	r.Skip(2) // base layer internal/available
	r.Skip(6) // vps_max_layers_minus1
	v.MaxSubLayersMinus1 = r.U32(3)
	if v.MaxSubLayersMinus1 > 6 {
		return nil, errors.New("h265: vps_max_sub_layers_minus1 out of range")
	}
	v.TemporalIDNesting = r.Flag()
	r.Skip(16) // vps_reserved_0xffff_16bits
	v.PTL = parsePTL(r, v.MaxSubLayersMinus1)
	if err := r.Err(); err != nil {
		return nil, fmt.Errorf("h265: VPS: %w", err)
	}
	// What follows matters only for the timing; a failure there leaves
	// the VPS usable.
	first := v.MaxSubLayersMinus1
	if r.Flag() { // vps_sub_layer_ordering_info_present_flag
		first = 0
	}
	for i := first; i <= v.MaxSubLayersMinus1; i++ {
		r.UE()
		r.UE()
		r.UE()
	}
	maxLayerID := r.U32(6)
	numLayerSets := r.UE() + 1
	if numLayerSets > 1024 {
		return v, nil
	}
	r.Skip(int(numLayerSets-1) * int(maxLayerID+1)) // layer_id_included_flag
	if r.Flag() {                                   // vps_timing_info_present_flag
		units, scale := r.U32(32), r.U32(32)
		if r.Err() == nil && units > 0 && scale > 0 {
			v.TimingInfoPresent, v.NumUnitsInTick, v.TimeScale = true, units, scale
		}
	}
	return v, nil
}

// SPS holds the fields of a sequence parameter set (7.3.2.2) that a muxer
// or player needs. Width and Height are the displayed size, after the
// conformance window.
type SPS struct {
	VPSID              uint8
	MaxSubLayersMinus1 uint32
	TemporalIDNesting  bool
	PTL                ProfileTierLevel
	ID                 uint32

	ChromaFormatIDC       uint32
	SeparateColourPlane   bool
	CodedWidth            int // pic_width_in_luma_samples
	CodedHeight           int
	Width, Height         int
	BitDepthLuma          uint32
	BitDepthChroma        uint32
	Log2MaxPicOrderCntLsb uint32

	// Bumping information for the highest temporal sub-layer.
	MaxDecPicBufferingMinus1 uint32
	MaxNumReorderPics        uint32
	MaxLatencyIncreasePlus1  uint32

	// VUI timing. Frame rate = TimeScale / NumUnitsInTick.
	TimingInfoPresent bool
	NumUnitsInTick    uint32
	TimeScale         uint32
}

// ParseSPS parses a sequence parameter set NAL unit of the base layer,
// header included.
func ParseSPS(nalu []byte) (*SPS, error) {
	r, err := rbsp(nalu, NALUTypeSPS, ErrNotSPS)
	if err != nil {
		return nil, err
	}
	s := &SPS{}
	s.VPSID = uint8(r.U(4))
	s.MaxSubLayersMinus1 = r.U32(3)
	if s.MaxSubLayersMinus1 > 6 {
		return nil, errors.New("h265: sps_max_sub_layers_minus1 out of range")
	}
	s.TemporalIDNesting = r.Flag()
	s.PTL = parsePTL(r, s.MaxSubLayersMinus1)
	s.ID = r.UE()
	if s.ID > 15 {
		return nil, fmt.Errorf("h265: SPS id %d out of range", s.ID)
	}
	s.ChromaFormatIDC = r.UE()
	if s.ChromaFormatIDC > 3 {
		return nil, fmt.Errorf("h265: chroma_format_idc %d out of range", s.ChromaFormatIDC)
	}
	if s.ChromaFormatIDC == 3 {
		s.SeparateColourPlane = r.Flag()
	}
	w, h := r.UE(), r.UE()
	if w == 0 || h == 0 || w > 16888 || h > 16888 {
		return nil, errors.New("h265: picture size out of range")
	}
	s.CodedWidth, s.CodedHeight = int(w), int(h)
	var winL, winR, winT, winB uint64
	if r.Flag() { // conformance_window_flag
		winL, winR, winT, winB = uint64(r.UE()), uint64(r.UE()), uint64(r.UE()), uint64(r.UE())
	}
	s.BitDepthLuma = r.UE() + 8
	s.BitDepthChroma = r.UE() + 8
	if s.BitDepthLuma > 16 || s.BitDepthChroma > 16 {
		return nil, errors.New("h265: bit depth out of range")
	}
	s.Log2MaxPicOrderCntLsb = r.UE() + 4
	if s.Log2MaxPicOrderCntLsb > 16 {
		return nil, errors.New("h265: log2_max_pic_order_cnt_lsb out of range")
	}
	first := s.MaxSubLayersMinus1
	if r.Flag() { // sps_sub_layer_ordering_info_present_flag
		first = 0
	}
	for i := first; i <= s.MaxSubLayersMinus1; i++ {
		s.MaxDecPicBufferingMinus1 = r.UE()
		s.MaxNumReorderPics = r.UE()
		s.MaxLatencyIncreasePlus1 = r.UE()
	}
	if s.MaxDecPicBufferingMinus1 > 15 || s.MaxNumReorderPics > s.MaxDecPicBufferingMinus1 {
		return nil, errors.New("h265: DPB size out of range")
	}
	if err := r.Err(); err != nil {
		return nil, fmt.Errorf("h265: SPS: %w", err)
	}

	subW, subH := uint64(1), uint64(1)
	if !s.SeparateColourPlane {
		switch s.ChromaFormatIDC {
		case 1:
			subW, subH = 2, 2
		case 2:
			subW = 2
		}
	}
	cx, cy := subW*(winL+winR), subH*(winT+winB)
	if cx >= uint64(w) || cy >= uint64(h) {
		return nil, errors.New("h265: conformance window exceeds the picture")
	}
	s.Width, s.Height = int(uint64(w)-cx), int(uint64(h)-cy)

	// What follows matters only for the VUI timing; a failure from here on
	// leaves the SPS usable.
	parseSPSTail(r, s)
	return s, nil
}

func parseSPSTail(r *bits.Reader, s *SPS) {
	r.UE()        // log2_min_luma_coding_block_size_minus3
	r.UE()        // log2_diff_max_min_luma_coding_block_size
	r.UE()        // log2_min_luma_transform_block_size_minus2
	r.UE()        // log2_diff_max_min_luma_transform_block_size
	r.UE()        // max_transform_hierarchy_depth_inter
	r.UE()        // max_transform_hierarchy_depth_intra
	if r.Flag() { // scaling_list_enabled_flag
		if r.Flag() { // sps_scaling_list_data_present_flag
			skipScalingListData(r)
		}
	}
	r.Skip(2)     // amp_enabled_flag, sample_adaptive_offset_enabled_flag
	if r.Flag() { // pcm_enabled_flag
		r.Skip(8) // pcm sample bit depths
		r.UE()
		r.UE()
		r.Skip(1) // pcm_loop_filter_disabled_flag
	}
	numSets := r.UE()
	if numSets > 64 {
		return
	}
	var numDeltaPocs [65]uint32
	for i := uint32(0); i < numSets && r.Err() == nil; i++ {
		if !parseShortTermRefPicSet(r, i, numSets, &numDeltaPocs) {
			return
		}
	}
	if r.Flag() { // long_term_ref_pics_present_flag
		n := r.UE()
		if n > 32 {
			return
		}
		r.Skip(int(n) * int(s.Log2MaxPicOrderCntLsb+1))
	}
	r.Skip(2)                        // sps_temporal_mvp_enabled_flag, strong_intra_smoothing_enabled_flag
	if !r.Flag() || r.Err() != nil { // vui_parameters_present_flag
		return
	}
	if r.Flag() { // aspect_ratio_info_present_flag
		if r.U(8) == 255 {
			r.Skip(32)
		}
	}
	if r.Flag() { // overscan_info_present_flag
		r.Skip(1)
	}
	if r.Flag() { // video_signal_type_present_flag
		r.Skip(4)
		if r.Flag() {
			r.Skip(24)
		}
	}
	if r.Flag() { // chroma_loc_info_present_flag
		r.UE()
		r.UE()
	}
	r.Skip(3)     // neutral_chroma_indication, field_seq, frame_field_info_present
	if r.Flag() { // default_display_window_flag
		r.UE()
		r.UE()
		r.UE()
		r.UE()
	}
	if r.Flag() { // vui_timing_info_present_flag
		units, scale := r.U32(32), r.U32(32)
		if r.Err() == nil && units > 0 && scale > 0 {
			s.TimingInfoPresent, s.NumUnitsInTick, s.TimeScale = true, units, scale
		}
	}
}

func skipScalingListData(r *bits.Reader) {
	for sizeID := 0; sizeID < 4; sizeID++ {
		step := 1
		if sizeID == 3 {
			step = 3
		}
		for matrixID := 0; matrixID < 6; matrixID += step {
			if !r.Flag() { // scaling_list_pred_mode_flag
				r.UE() // scaling_list_pred_matrix_id_delta
				continue
			}
			coefNum := min(64, 1<<(4+(sizeID<<1)))
			if sizeID > 1 {
				r.SE() // scaling_list_dc_coef_minus8
			}
			for i := 0; i < coefNum && r.Err() == nil; i++ {
				r.SE()
			}
		}
	}
}

// parseShortTermRefPicSet skips st_ref_pic_set(idx) (7.3.7), recording
// NumDeltaPocs, which later sets predicted from it need.
func parseShortTermRefPicSet(r *bits.Reader, idx, numSets uint32, numDeltaPocs *[65]uint32) bool {
	inter := idx != 0 && r.Flag()
	if inter {
		// delta_idx_minus1 is coded only in slice headers (idx == numSets).
		refIdx := idx - 1
		r.Skip(1) // delta_rps_sign
		r.UE()    // abs_delta_rps_minus1
		n := uint32(0)
		for j := uint32(0); j <= numDeltaPocs[refIdx]; j++ {
			used := r.Flag()
			useDelta := true
			if !used {
				useDelta = r.Flag()
			}
			if used || useDelta {
				n++
			}
		}
		numDeltaPocs[idx] = n
		return r.Err() == nil
	}
	neg, pos := r.UE(), r.UE()
	if neg > 16 || pos > 16 {
		return false
	}
	for i := uint32(0); i < neg+pos; i++ {
		r.UE()    // delta_poc_minus1
		r.Skip(1) // used_by_curr_pic_flag
	}
	numDeltaPocs[idx] = neg + pos
	return r.Err() == nil
}

// FrameRate returns the frame rate the VUI timing declares, or 0.
func (s *SPS) FrameRate() float64 {
	if !s.TimingInfoPresent {
		return 0
	}
	return float64(s.TimeScale) / float64(s.NumUnitsInTick)
}

// CodecString returns the hvc1 codecs parameter for this SPS.
func (s *SPS) CodecString() string { return s.PTL.CodecString() }

// PPS holds the fields of a picture parameter set (7.3.2.3.1) that slice
// header parsing starts with.
type PPS struct {
	ID                         uint32
	SPSID                      uint32
	DependentSliceSegments     bool
	OutputFlagPresent          bool
	NumExtraSliceHeaderBits    uint32
	SignDataHiding             bool
	CabacInitPresent           bool
	NumRefIdxL0DefaultActiveM1 uint32
	NumRefIdxL1DefaultActiveM1 uint32
}

// ParsePPS parses the start of a picture parameter set NAL unit.
func ParsePPS(nalu []byte) (*PPS, error) {
	r, err := rbsp(nalu, NALUTypePPS, ErrNotPPS)
	if err != nil {
		return nil, err
	}
	p := &PPS{}
	p.ID = r.UE()
	p.SPSID = r.UE()
	p.DependentSliceSegments = r.Flag()
	p.OutputFlagPresent = r.Flag()
	p.NumExtraSliceHeaderBits = r.U32(3)
	p.SignDataHiding = r.Flag()
	p.CabacInitPresent = r.Flag()
	p.NumRefIdxL0DefaultActiveM1 = r.UE()
	p.NumRefIdxL1DefaultActiveM1 = r.UE()
	if err := r.Err(); err != nil {
		return nil, fmt.Errorf("h265: PPS: %w", err)
	}
	if p.ID > 63 || p.SPSID > 15 || p.NumRefIdxL0DefaultActiveM1 > 14 || p.NumRefIdxL1DefaultActiveM1 > 14 {
		return nil, errors.New("h265: PPS field out of range")
	}
	return p, nil
}
