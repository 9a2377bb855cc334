package application

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	reports    prometheus.Counter
	lost       prometheus.Counter
	duplicates prometheus.Counter
	sent       prometheus.Counter

	votes         *prometheus.CounterVec
	votesBy       [3]prometheus.Counter // votes by polls.Outcome, looked up once
	votesRejected *prometheus.CounterVec
	commitSeconds prometheus.Histogram
	resultsPushed prometheus.Counter
	pollsCreated  prometheus.Counter
	pollsClosed   prometheus.Counter
	resyncs       prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, s *Server) (*metrics, error) {
	m := &metrics{
		reports: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backchannel_application_telemetry_reports_total", Help: "Telemetry reports aggregated.",
		}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backchannel_application_telemetry_lost_total", Help: "Telemetry reports missing (gaps in sn).",
		}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backchannel_application_telemetry_duplicates_total", Help: "Telemetry reports ignored as duplicates or out of order.",
		}),
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backchannel_application_messages_sent_total", Help: "Mirror messages published to connection servers.",
		}),
	}
	m.votes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "backchannel_application_votes_total", Help: "Votes handled, by outcome: counted (first), changed, unchanged (a resend).",
	}, []string{"outcome"})
	for i, o := range [...]string{"counted", "changed", "unchanged"} {
		m.votesBy[i] = m.votes.WithLabelValues(o)
	}
	m.votesRejected = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "backchannel_application_votes_rejected_total", Help: "Votes refused, by error code.",
	}, []string{"code"})
	m.commitSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "backchannel_application_vote_commit_seconds", Help: "Time to make one group of vote batches durable.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 12),
	})
	m.resultsPushed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "backchannel_application_results_pushed_total", Help: "Results messages pushed to poll audiences.",
	})
	m.pollsCreated = prometheus.NewCounter(prometheus.CounterOpts{Name: "backchannel_application_polls_created_total", Help: "Polls created."})
	m.pollsClosed = prometheus.NewCounter(prometheus.CounterOpts{Name: "backchannel_application_polls_closed_total", Help: "Polls closed."})
	m.resyncs = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "backchannel_application_link_resyncs_total", Help: "Links asked to reconnect because this server had no profile for them.",
	})
	profiles := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "backchannel_application_profiles", Help: "Profiles (open links) known to this application server.",
	}, func() float64 { return float64(s.index.Len()) })
	groupsGauge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "backchannel_application_groups", Help: "Non-empty automatic groups plus custom groups.",
	}, func() float64 { return float64(len(s.index.AutoCounts()) + len(s.index.CustomGroups())) })
	for _, c := range []prometheus.Collector{m.reports, m.lost, m.duplicates, m.sent, profiles, groupsGauge,
		m.votes, m.votesRejected, m.commitSeconds, m.resultsPushed, m.pollsCreated, m.pollsClosed, m.resyncs} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
