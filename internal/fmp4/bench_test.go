package fmp4

import "testing"

// BenchmarkMuxer200msParts measures the muxer cutting 200 ms parts of 30 fps
// video (8 kB frames) and 48 kHz AAC (400-byte frames).
func BenchmarkMuxer200msParts(b *testing.B) {
	v, a := testTracks(b)
	frame := make([]byte, 8000)
	aframe := make([]byte, 400)
	var bytesOut int64
	for b.Loop() {
		m, err := NewMuxer(v, a)
		if err != nil {
			b.Fatal(err)
		}
		var adts int64
		for i := range 30 { // one second
			dts := int64(i) * 3000
			if err := m.WriteSample(1, TimedSample{DTS: dts, PTS: dts + 6000, Sync: i == 0, Data: frame}); err != nil {
				b.Fatal(err)
			}
			for ; adts*90000 <= dts*48000; adts += 1024 {
				if err := m.WriteSample(2, TimedSample{DTS: adts, PTS: adts, Duration: 1024, Data: aframe}); err != nil {
					b.Fatal(err)
				}
			}
			if i%6 == 5 {
				frag, _, err := m.Fragment(TicksToDuration(dts, 90000))
				if err != nil {
					b.Fatal(err)
				}
				bytesOut += int64(len(frag))
			}
		}
	}
	b.ReportMetric(float64(bytesOut)/b.Elapsed().Seconds()/1e6, "MB/s")
	b.ReportMetric(float64(b.N*5)/b.Elapsed().Seconds(), "parts/s")
}
