package hls

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	started    prometheus.Counter
	playlists  prometheus.Counter
	blocking   prometheus.Counter
	bytes      *prometheus.CounterVec
	rejections *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, s *Server) (*metrics, error) {
	m := &metrics{
		started: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backchannel_hls_packagers_started_total", Help: "LL-HLS packagers started (one per stream on first request)."}),
		playlists: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backchannel_hls_playlists_served_total", Help: "Media playlists served, blocking or not."}),
		blocking: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backchannel_hls_blocking_reloads_total", Help: "Media playlist requests with _HLS_msn (blocking reloads)."}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backchannel_hls_bytes_sent_total", Help: "Bytes of init segments, segments and parts served, by kind."}, []string{"kind"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backchannel_hls_rejections_total", Help: "HLS requests refused, by reason: offline, codec, msn_ahead, timeout."}, []string{"reason"}),
	}
	packagers := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "backchannel_hls_packagers", Help: "Streams being packaged as LL-HLS on this edge."},
		func() float64 { return float64(s.Muxers()) })
	for _, c := range []prometheus.Collector{m.started, m.playlists, m.blocking, m.bytes, m.rejections, packagers} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("hls: registering metrics: %w", err)
		}
	}
	return m, nil
}
