package fmp4

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Sample flags (14496-12 8.8.3.1) written in trun.
const (
	// SampleFlagsSync: sample_depends_on = 2 (an I picture or audio).
	SampleFlagsSync uint32 = 0x02000000
	// SampleFlagsNonSync: sample_depends_on = 1, sample_is_non_sync_sample.
	SampleFlagsNonSync uint32 = 0x01010000
)

// trun flags.
const (
	trunDataOffset      = 0x000001
	trunSampleDuration  = 0x000100
	trunSampleSize      = 0x000200
	trunSampleFlags     = 0x000400
	trunSampleCTOffsets = 0x000800

	tfhdDefaultBaseIsMoof = 0x020000
)

// Sample is one media sample of a fragment.
type Sample struct {
	// Duration is the DTS of the next sample minus this one's, in the
	// track's time scale.
	Duration uint32
	// CompositionOffset is PTS minus DTS; negative values are allowed
	// (trun version 1).
	CompositionOffset int32
	// NonSync marks a sample that depends on others (not a keyframe).
	NonSync bool
	// Data is the sample: length-prefixed NAL units for video (see
	// H264.SampleData), a raw access unit or Opus packet for audio.
	Data []byte
}

// TrackFragment is the run of samples of one track in a fragment.
type TrackFragment struct {
	TrackID uint32
	// BaseDecodeTime is the DTS of the first sample (tfdt), in the track's
	// time scale, counted from the start of the presentation.
	BaseDecodeTime uint64
	Samples        []Sample
}

// Fragment is a media fragment: moof and mdat.
type Fragment struct {
	// SequenceNumber is the mfhd sequence number; it should start at 1
	// and increase by one per fragment.
	SequenceNumber uint32
	Tracks         []TrackFragment
}

// Marshal returns the fragment's moof and mdat boxes.
func (f *Fragment) Marshal() ([]byte, error) { return f.AppendTo(nil) }

// AppendTo appends the fragment's moof and mdat boxes to dst.
func (f *Fragment) AppendTo(dst []byte) ([]byte, error) {
	if len(f.Tracks) == 0 {
		return nil, errors.New("fmp4: fragment without tracks")
	}
	mdatSize := 8
	for _, t := range f.Tracks {
		if len(t.Samples) == 0 {
			return nil, fmt.Errorf("fmp4: track %d has no samples in the fragment", t.TrackID)
		}
		for _, s := range t.Samples {
			mdatSize += len(s.Data)
			if mdatSize > maxMdat {
				return nil, ErrTooLarge
			}
		}
	}

	moofStart := len(dst)
	w := &boxWriter{b: dst}
	w.start("moof")
	w.startFull("mfhd", 0, 0)
	w.u32(f.SequenceNumber)
	w.end()
	dataOffsetAt := make([]int, len(f.Tracks))
	for i, t := range f.Tracks {
		w.start("traf")
		w.startFull("tfhd", 0, tfhdDefaultBaseIsMoof)
		w.u32(t.TrackID)
		w.end()
		w.startFull("tfdt", 1, 0)
		w.u64(t.BaseDecodeTime)
		w.end()
		flags := uint32(trunDataOffset | trunSampleDuration | trunSampleSize | trunSampleFlags)
		for _, s := range t.Samples {
			if s.CompositionOffset != 0 {
				flags |= trunSampleCTOffsets
				break
			}
		}
		w.startFull("trun", 1, flags)
		w.u32(uint32(len(t.Samples)))
		dataOffsetAt[i] = len(w.b)
		w.u32(0) // data_offset, patched below
		for _, s := range t.Samples {
			w.u32(s.Duration)
			w.u32(uint32(len(s.Data)))
			if s.NonSync {
				w.u32(SampleFlagsNonSync)
			} else {
				w.u32(SampleFlagsSync)
			}
			if flags&trunSampleCTOffsets != 0 {
				w.u32(uint32(s.CompositionOffset))
			}
		}
		w.end() // trun
		w.end() // traf
	}
	w.end() // moof

	// Each track's data_offset counts from the start of the moof
	// (default-base-is-moof) to its first sample in the mdat.
	offset := len(w.b) - moofStart + 8
	for i, t := range f.Tracks {
		binary.BigEndian.PutUint32(w.b[dataOffsetAt[i]:], uint32(offset))
		for _, s := range t.Samples {
			offset += len(s.Data)
		}
	}
	if offset > maxMdat {
		return nil, ErrTooLarge
	}

	w.b = binary.BigEndian.AppendUint32(w.b, uint32(mdatSize))
	w.b = append(w.b, "mdat"...)
	for _, t := range f.Tracks {
		for _, s := range t.Samples {
			w.b = append(w.b, s.Data...)
		}
	}
	return w.b, nil
}

// AppendStyp appends a segment type box (styp) to dst, for a media segment
// written as its own file: brands msdh and msix, as DASH and HLS fMP4
// segments declare.
func AppendStyp(dst []byte) []byte {
	w := &boxWriter{b: dst}
	w.start("styp")
	w.fourcc("msdh")
	w.u32(0)
	w.fourcc("msdh")
	w.fourcc("msix")
	w.end()
	return w.b
}
