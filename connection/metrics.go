package connection

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/backchannel/backchannel/internal/control"
)

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
	votesUp     prometheus.Counter
	linkSends   prometheus.Counter
	votesAcked  prometheus.Counter
	// commitsUnmatched: a committed batch not waiting (named twice, or
	// pushed out); acksDropped: votes of batches pushed out unacked.
	commitsUnmatched prometheus.Counter
	acksDropped      prometheus.Counter
	ioUring          prometheus.Gauge
	inByType         map[string]prometheus.Counter // messagesIn of the known types, looked up once
}

// in counts one accepted client frame of type t.
func (m *metrics) in(t string) {
	if c, ok := m.inByType[t]; ok {
		c.Inc()
		return
	}
	m.messagesIn.WithLabelValues(t).Inc()
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
		votesUp: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backchannel_connection_votes_relayed_total", Help: "Votes relayed to the application tier (in binary vote batches).",
		}),
		linkSends: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backchannel_connection_link_sends_total", Help: "Messages to single links (acks, errors, state) handed to their links.",
		}),
		votesAcked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backchannel_connection_votes_acked_total", Help: "Votes this server acked once the application tier reported their batch durable.",
		}),
		commitsUnmatched: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backchannel_connection_commits_unmatched_total", Help: "Vote batches reported durable that were not waiting here: reported twice (redelivered and committed again) or pushed out.",
		}),
		acksDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backchannel_connection_acks_dropped_total", Help: "Votes never acked because their batch waited for its commit behind more than a million newer votes; their players resend them after reconnecting.",
		}),
		ioUring: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "backchannel_connection_io_uring", Help: "1 when the epoll transport batches socket reads and writes with io_uring, 0 when it makes one system call each (no io_uring, --io-uring=false, or not started).",
		}),
		inByType: map[string]prometheus.Counter{},
	}
	for _, t := range []string{control.TypeHello, control.TypeWatch, control.TypeTelemetry, control.TypeVote, control.TypeResume} {
		m.inByType[t] = m.messagesIn.WithLabelValues(t)
	}
	for _, c := range []prometheus.Collector{m.links, m.messagesIn, m.messagesOut, m.dropped, m.closes, m.rejected, m.busErrors, m.fanouts, m.resumes, m.replayed, m.reannounced, m.votesUp, m.linkSends, m.votesAcked, m.commitsUnmatched, m.acksDropped, m.ioUring} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
