package fmp4

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/backchannel/backchannel/internal/codec/opus"
)

// spec turns an annotated byte listing into bytes: hex digits, 'abcd'
// four-character codes and "text", with // comments to the end of a line.
func spec(t testing.TB, s string) []byte {
	t.Helper()
	var out []byte
	for _, line := range strings.Split(s, "\n") {
		if i := strings.Index(line, "//"); i >= 0 {
			line = line[:i]
		}
		for _, tok := range strings.Fields(line) {
			switch {
			case strings.HasPrefix(tok, "'") && strings.HasSuffix(tok, "'") && len(tok) == 6:
				out = append(out, tok[1:5]...)
			case strings.HasPrefix(tok, `"`) && strings.HasSuffix(tok, `"`):
				out = append(out, tok[1:len(tok)-1]...)
			default:
				b, err := hex.DecodeString(tok)
				if err != nil {
					t.Fatalf("bad token %q", tok)
				}
				out = append(out, b...)
			}
		}
	}
	return out
}

// diffBytes reports the first difference with a little context.
func diffBytes(t *testing.T, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	lo := max(0, i-8)
	t.Fatalf("bytes differ at %d (got %d bytes, want %d):\n got  ...%x\n want ...%x",
		i, len(got), len(want), got[lo:min(len(got), i+16)], want[lo:min(len(want), i+16)])
}

const matrixHex = "00010000 00000000 00000000 00000000 00010000 00000000 00000000 00000000 40000000"

// TestInitOpusLayout checks a whole init segment, field by field, for one
// stereo Opus track (14496-12 and the Opus-in-ISOBMFF mapping).
func TestInitOpusLayout(t *testing.T) {
	head, _ := opus.NewHead(2)
	in := Init{Tracks: []Track{{ID: 1, Codec: &Opus{Head: head}}}}
	got, err := in.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	want := spec(t, `
		0000001c 'ftyp' 'iso6' 00000000      // size 28, major brand iso6, minor version 0
		'iso6' 'cmfc' 'mp41'                 // compatible brands
		00000224 'moov'                      // 548 bytes
		  0000006c 'mvhd' 00000000           // 108 bytes, version 0, flags 0
		    00000000 00000000                // creation, modification time
		    000003e8 00000000                // timescale 1000, duration unknown
		    00010000 0100 0000 0000000000000000 // rate 1.0, volume 1.0, reserved
		    `+matrixHex+`
		    000000000000000000000000000000000000000000000000 // pre_defined
		    00000002                         // next_track_ID
		  00000188 'trak'                    // 392 bytes
		    0000005c 'tkhd' 00000003         // version 0, flags enabled|in_movie
		      00000000 00000000 00000001     // times, track_ID 1
		      00000000 00000000              // reserved, duration
		      0000000000000000               // reserved
		      0000 0000 0100 0000            // layer, alternate_group, volume 1.0, reserved
		      `+matrixHex+`
		      00000000 00000000              // width, height: audio
		    00000124 'mdia'                  // 292 bytes
		      00000020 'mdhd' 00000000       // version 0
		        00000000 00000000            // times
		        0000bb80 00000000            // timescale 48000, duration
		        55c4 0000                    // language "und" (packed 5-bit letters), pre_defined
		      0000002d 'hdlr' 00000000 00000000 'soun' // pre_defined, handler soun
		        000000000000000000000000 "SoundHandler" 00
		      000000cf 'minf'                // 207 bytes
		        00000010 'smhd' 00000000 0000 0000 // balance, reserved
		        00000024 'dinf'
		          0000001c 'dref' 00000000 00000001 // one entry
		            0000000c 75726c20 00000001 // 'url ', flags 1: media in this file
		        00000093 'stbl'              // 147 bytes
		          00000047 'stsd' 00000000 00000001 // one sample entry
		            00000037 'Opus'          // AudioSampleEntry, 55 bytes
		              000000000000 0001      // reserved, data_reference_index 1
		              0000000000000000       // reserved
		              0002 0010 0000 0000    // channelcount 2, samplesize 16, pre_defined, reserved
		              bb800000               // samplerate 48000 in 16.16
		              00000013 'dOps'        // OpusSpecificBox, 19 bytes
		                00 02 0138           // Version 0, OutputChannelCount 2, PreSkip 312
		                0000bb80 0000 00     // InputSampleRate 48000, OutputGain 0, family 0
		          00000010 'stts' 00000000 00000000 // no entries: fragmented
		          00000010 'stsc' 00000000 00000000
		          00000010 'stco' 00000000 00000000
		          00000014 'stsz' 00000000 00000000 00000000
		  00000028 'mvex'
		    00000020 'trex' 00000000
		      00000001 00000001              // track_ID 1, sample description 1
		      00000000 00000000 00000000     // default duration, size, flags
	`)
	diffBytes(t, got, want)
}

// TestFragmentLayout checks a two-track fragment field by field: tfhd with
// default-base-is-moof, tfdt version 1, trun version 1 with signed
// composition offsets, and data offsets into one mdat.
func TestFragmentLayout(t *testing.T) {
	f := Fragment{SequenceNumber: 7, Tracks: []TrackFragment{
		{TrackID: 1, BaseDecodeTime: 90000, Samples: []Sample{
			{Duration: 3000, CompositionOffset: 6000, Data: []byte{0xa1, 0xa2, 0xa3, 0xa4}},
			{Duration: 3000, CompositionOffset: -3000, NonSync: true, Data: []byte{0xb1, 0xb2}},
		}},
		{TrackID: 2, BaseDecodeTime: 48000, Samples: []Sample{
			{Duration: 1024, Data: []byte{0xc1, 0xc2, 0xc3}},
		}},
	}}
	got, err := f.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	want := spec(t, `
		000000c4 'moof'                      // 196 bytes
		  00000010 'mfhd' 00000000 00000007  // sequence_number 7
		  00000060 'traf'                    // 96 bytes
		    00000010 'tfhd' 00020000 00000001 // flags default-base-is-moof, track 1
		    00000014 'tfdt' 01000000 0000000000015f90 // version 1, base decode time 90000
		    00000034 'trun' 01000f01         // version 1; data offset, duration, size, flags, CT offset
		      00000002 000000cc              // 2 samples, data at moof+204 (196 + mdat header)
		      00000bb8 00000004 02000000 00001770 // 3000, 4 bytes, sync (depends_on 2), +6000
		      00000bb8 00000002 01010000 fffff448 // 3000, 2 bytes, non-sync (depends_on 1), -3000
		  0000004c 'traf'                    // 76 bytes
		    00000010 'tfhd' 00020000 00000002
		    00000014 'tfdt' 01000000 000000000000bb80 // 48000
		    00000020 'trun' 01000701         // no CT offsets: all zero
		      00000001 000000d2              // 1 sample at moof+210, after track 1's 6 bytes
		      00000400 00000003 02000000     // 1024, 3 bytes, sync
		00000011 'mdat' a1a2a3a4 b1b2 c1c2c3
	`)
	diffBytes(t, got, want)

	styp := AppendStyp(nil)
	diffBytes(t, styp, spec(t, `00000018 'styp' 'msdh' 00000000 'msdh' 'msix'`))
}

// TestSampleEntryLayouts checks the decoder configuration records.
func TestSampleEntryLayouts(t *testing.T) {
	sps, _ := hex.DecodeString("6764000dacd94141fb0110000003001000000303c0f1429960")
	pps, _ := hex.DecodeString("68ebe3cb22c0")
	avc := &H264{SPS: sps, PPS: pps}
	if err := avc.validate(); err != nil {
		t.Fatal(err)
	}
	w := &boxWriter{}
	avc.sampleEntry(w)
	avcC, ok := Find(w.b, "avc1")
	if !ok || len(avcC.Payload) < 78 {
		t.Fatal("no avc1")
	}
	// VisualSampleEntry: 320x240 from the SPS.
	diffBytes(t, avcC.Payload[:78], spec(t, `
		000000000000 0001 0000 0000 000000000000000000000000 // reserved, dref index, pre_defined
		0140 00f0                             // width 320, height 240
		00480000 00480000 00000000 0001       // 72 dpi, reserved, frame_count 1
		0000000000000000000000000000000000000000000000000000000000000000 // compressorname
		0018 ffff                             // depth 24, pre_defined -1
	`))
	diffBytes(t, avcC.Payload[78:], spec(t, `
		00000036 'avcC' 01                    // 54 bytes, configurationVersion 1
		64 00 0d                              // profile 100 (High), compatibility, level 1.3
		ff e1                                 // 4-byte NAL lengths; 1 SPS
		0019 6764000dacd94141fb0110000003001000000303c0f1429960
		01 0006 68ebe3cb22c0                  // 1 PPS
		fd f8 f8 00                           // High: chroma 4:2:0, 8-bit luma and chroma, no SPS ext
	`))
	if avc.CodecString() != "avc1.64000d" {
		t.Errorf("codec string %s", avc.CodecString())
	}

	vps, _ := hex.DecodeString("40010c01ffff01600000030090000003000003003f959809")
	hsps, _ := hex.DecodeString("42010101600000030090000003000003003fa005220171c9596566924caf016808000003000800000300c840")
	hpps, _ := hex.DecodeString("4401c172b46240")
	hevc := &H265{VPS: vps, SPS: hsps, PPS: hpps}
	if err := hevc.validate(); err != nil {
		t.Fatal(err)
	}
	w = &boxWriter{}
	hevc.sampleEntry(w)
	hvc1, _ := Find(w.b, "hvc1")
	if got := hvc1.Payload[24:28]; !bytes.Equal(got, []byte{0x02, 0x8a, 0x01, 0x6e}) { // 650x366
		t.Errorf("hvc1 size %x", got)
	}
	diffBytes(t, hvc1.Payload[78:], spec(t, `
		00000079 'hvcC' 01                    // 121 bytes, configurationVersion 1
		01                                    // profile_space 0, tier Main, profile_idc 1 (Main)
		60000000                              // compatibility flags 1, 2
		900000000000                          // progressive, frame-only
		3f                                    // level_idc 63 (2.1)
		f000 fc                               // min_spatial_segmentation 0, parallelism unknown
		fd f8 f8                              // 4:2:0, 8-bit, 8-bit
		0000                                  // avgFrameRate unspecified
		0f                                    // 1 temporal layer, temporalIdNested, 4-byte lengths
		03                                    // three arrays, each complete (no in-band copies)
		a0 0001 0018 40010c01ffff01600000030090000003000003003f959809
		a1 0001 002c 42010101600000030090000003000003003fa005220171c9596566924caf016808000003000800000300c840
		a2 0001 0007 4401c172b46240
	`))

	a := &AAC{Config: []byte{0x11, 0x90}}
	if err := a.validate(); err != nil {
		t.Fatal(err)
	}
	w = &boxWriter{}
	a.sampleEntry(w)
	mp4a, _ := Find(w.b, "mp4a")
	diffBytes(t, mp4a.Payload, spec(t, `
		000000000000 0001 0000000000000000    // reserved, dref index, reserved
		0002 0010 0000 0000 bb800000          // stereo, 16-bit, 48000 Hz
		00000027 'esds' 00000000              // 39 bytes
		03 19 0000 00                         // ES_Descriptor, 25 bytes: ES_ID 0, no flags
		  04 11 40 15                         // DecoderConfigDescriptor, 17 bytes: MPEG-4 Audio, audio stream
		    000000 00000000 00000000          // bufferSizeDB, max and average bitrate unknown
		    05 02 1190                        // DecoderSpecificInfo: AudioSpecificConfig AAC-LC 48 kHz stereo
		  06 01 02                            // SLConfigDescriptor: predefined MP4
	`))
	if a.CodecString() != "mp4a.40.2" {
		t.Errorf("codec string %s", a.CodecString())
	}

	head, _ := opus.NewHead(6)
	o := &Opus{Head: head}
	w = &boxWriter{}
	o.sampleEntry(w)
	dops, _ := Find(w.b, "Opus")
	diffBytes(t, dops.Payload[28:], spec(t, `
		0000001b 'dOps' 00 06 0138 0000bb80 0000 // 27 bytes: 6 channels
		01 04 02 000401020305                 // family 1 (Vorbis order): 4 streams, 2 coupled, mapping
	`))
}

func TestDescriptorSizes(t *testing.T) {
	if got := descriptor(5, make([]byte, 200)); !bytes.Equal(got[:3], []byte{5, 0x81, 0x48}) {
		t.Errorf("200-byte descriptor header %x", got[:3])
	}
}
