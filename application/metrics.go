package application

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	reports    prometheus.Counter
	lost       prometheus.Counter
	duplicates prometheus.Counter
	sent       prometheus.Counter
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
	profiles := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "backchannel_application_profiles", Help: "Profiles (open links) known to this application server.",
	}, func() float64 { return float64(s.index.Len()) })
	groupsGauge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "backchannel_application_groups", Help: "Non-empty automatic groups plus custom groups.",
	}, func() float64 { return float64(len(s.index.AutoCounts()) + len(s.index.CustomGroups())) })
	for _, c := range []prometheus.Collector{m.reports, m.lost, m.duplicates, m.sent, profiles, groupsGauge} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
