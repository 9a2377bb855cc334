package h264

import (
	"testing"

	"github.com/pion/rtp"
)

// BenchmarkDepacketizer measures packets per second through the
// depacketizer on a real libx264 stream packetized by pion (1200-byte MTU).
func BenchmarkDepacketizer(b *testing.B) {
	aus := packetizeX264(b, 1200)
	var pkts []*rtp.Packet
	for _, au := range aus {
		pkts = append(pkts, au.packets...)
	}
	b.ResetTimer()
	n := 0
	for b.Loop() {
		var d Depacketizer
		for _, p := range pkts {
			if _, err := d.Push(p); err != nil {
				b.Fatal(err)
			}
			n++
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "packets/s")
}

func BenchmarkParseSPS(b *testing.B) {
	sps := []byte{0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9, 0x41, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10,
		0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x42, 0x99, 0x60}
	for b.Loop() {
		if _, err := ParseSPS(sps); err != nil {
			b.Fatal(err)
		}
	}
}
