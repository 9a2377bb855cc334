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
	fanouts     prometheus.Counter
	resumes     *prometheus.CounterVec
	replayed    prometheus.Counter
	reannounced prometheus.Counter
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
			Name: "backchannel_connection_messages_out_total", Help: "Group message frames handed to member links.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backchannel_connection_messages_dropped_total", Help: "Messages dropped because a link's send queue was full (non-critical) or superseded by a newer latest-state message.",
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
		fanouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backchannel_connection_group_sends_total", Help: "Group messages fanned out to member links.",
		}),
		resumes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backchannel_connection_resumes_total", Help: "Resume requests, by whether every missed message was replayed.",
		}, []string{"recovered"}),
		replayed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backchannel_connection_replayed_total", Help: "Group messages replayed to resuming links.",
		}),
		reannounced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backchannel_connection_reannounced_total", Help: "Links re-announced upward after bus resets.",
		}),
	}
	for _, c := range []prometheus.Collector{m.links, m.messagesIn, m.messagesOut, m.dropped, m.closes, m.rejected, m.busErrors, m.fanouts, m.resumes, m.replayed, m.reannounced} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
