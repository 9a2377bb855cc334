package connection

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	links       prometheus.Gauge
	messagesIn  *prometheus.CounterVec
	messagesOut prometheus.Counter
	dropped     prometheus.Counter
	closes      *prometheus.CounterVec
	rejected    *prometheus.CounterVec
	busErrors   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		links: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "backchannel_connection_links", Help: "Control links that said hello and are open.",
		}),
		messagesIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backchannel_connection_messages_in_total", Help: "Client frames accepted, by type.",
		}, []string{"type"}),
		messagesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backchannel_connection_messages_out_total", Help: "Frames written to links.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backchannel_connection_messages_dropped_total", Help: "Non-critical messages dropped because a link's send queue was full.",
		}),
		closes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backchannel_connection_closes_total", Help: "Links closed, by reason.",
		}, []string{"reason"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backchannel_connection_rejected_total", Help: "WebSocket upgrades refused, by reason.",
		}, []string{"reason"}),
		busErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backchannel_connection_bus_errors_total", Help: "Failed bus publishes and undecodable bus messages.",
		}),
	}
	for _, c := range []prometheus.Collector{m.links, m.messagesIn, m.messagesOut, m.dropped, m.closes, m.rejected, m.busErrors} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
