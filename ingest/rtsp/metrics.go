package rtsp

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/backchannel/backchannel/ingest/rtsp/wire"
)

type metrics struct {
	connections prometheus.Gauge
	sessions    *prometheus.GaugeVec   // mode: publish, play, setup
	publishes   prometheus.Counter     // sessions that went live
	plays       prometheus.Counter     // reader sessions that started playing
	requests    *prometheus.CounterVec // method
	rejections  *prometheus.CounterVec // reason
	packetsIn   *prometheus.CounterVec // kind
	bytesIn     *prometheus.CounterVec // kind
	packetsOut  prometheus.Counter
	bytesOut    prometheus.Counter
	dropped     *prometheus.CounterVec // reason
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "backchannel_rtsp_connections", Help: "Open RTSP connections."}),
		sessions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "backchannel_rtsp_sessions", Help: "RTSP sessions by mode: setup (not yet recording or playing), publish, play."}, []string{"mode"}),
		publishes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backchannel_rtsp_publishes_total", Help: "RTSP sessions that went live (RECORD)."}),
		plays: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backchannel_rtsp_plays_total", Help: "RTSP reader sessions that started playing."}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backchannel_rtsp_requests_total", Help: "RTSP requests by method (other: unknown methods)."}, []string{"method"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backchannel_rtsp_rejections_total", Help: "RTSP requests refused, by reason."}, []string{"reason"}),
		packetsIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backchannel_rtsp_packets_received_total", Help: "RTP packets received from RTSP publishers and pulled sources."}, []string{"kind"}),
		bytesIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backchannel_rtsp_bytes_received_total", Help: "RTP bytes received from RTSP publishers and pulled sources."}, []string{"kind"}),
		packetsOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backchannel_rtsp_packets_sent_total", Help: "RTP packets sent to RTSP readers."}),
		bytesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backchannel_rtsp_bytes_sent_total", Help: "RTP bytes sent to RTSP readers."}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backchannel_rtsp_dropped_packets_total", Help: "Packets dropped: queue_full (a slow TCP reader), unknown_source (UDP from no session), malformed."}, []string{"reason"}),
	}
	for _, c := range []prometheus.Collector{m.connections, m.sessions, m.publishes, m.plays, m.requests, m.rejections,
		m.packetsIn, m.bytesIn, m.packetsOut, m.bytesOut, m.dropped} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("rtsp: registering metrics: %w", err)
		}
	}
	return m, nil
}

var knownMethods = map[string]bool{
	wire.MethodOptions: true, wire.MethodDescribe: true, wire.MethodAnnounce: true, wire.MethodSetup: true,
	wire.MethodPlay: true, wire.MethodPause: true, wire.MethodRecord: true, wire.MethodTeardown: true,
	wire.MethodGetParameter: true, wire.MethodSetParameter: true, wire.MethodRedirect: true,
}

func methodLabel(m string) string {
	if knownMethods[m] {
		return m
	}
	return "other"
}
