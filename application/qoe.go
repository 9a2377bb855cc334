package application

import (
	"math/rand/v2"
	"slices"
	"time"

	"github.com/backchannel/backchannel/internal/control"
)

// maxStartupSamples bounds the startup-time samples a window keeps; beyond
// it, reservoir sampling keeps the percentiles honest.
const maxStartupSamples = 1024

// qoeAgg accumulates telemetry reports of one group over one time window
// (or over the group's whole life).
type qoeAgg struct {
	start, end time.Time

	reports, lost, failures int
	intervalMS, playMS      float64
	rbN, rbMS, dfa          float64
	frzN, frzMS             float64

	loss, jbd, rtt, pb, mtp, ltc, bl mean
	startup                          []float64
	startupSeen                      int
}

type mean struct {
	sum float64
	n   int
}

func (m *mean) add(v *float64) {
	if v != nil {
		m.sum += *v
		m.n++
	}
}

func (m mean) value() *float64 {
	if m.n == 0 {
		return nil
	}
	v := m.sum / float64(m.n)
	return &v
}

func (a *qoeAgg) add(t *control.Telemetry, lost int) {
	a.reports++
	a.lost += lost
	a.intervalMS += t.IV
	a.playMS += t.PlayMS
	a.rbN += t.RbN
	a.rbMS += t.RbMS
	a.dfa += t.DFA
	if t.Sta == "f" || len(t.Err) > 0 {
		a.failures++
	}
	a.pb.add(t.PB)
	a.mtp.add(t.MTP)
	a.ltc.add(t.LTC)
	a.bl.add(t.BL)
	if r := t.RTC; r != nil {
		a.frzN += r.FrzN
		a.frzMS += r.FrzMS
		a.loss.add(r.Loss)
		a.jbd.add(r.JbdMS)
		a.rtt.add(r.RttMS)
	}
	if t.MSD != nil {
		a.startupSeen++
		if len(a.startup) < maxStartupSamples {
			a.startup = append(a.startup, *t.MSD)
		} else if i := rand.IntN(a.startupSeen); i < maxStartupSamples {
			a.startup[i] = *t.MSD
		}
	}
}

// QoE is the JSON view of an aggregate. Ratios and means are null when
// nothing was measured.
type QoE struct {
	Start          *time.Time `json:"start,omitempty"`
	End            *time.Time `json:"end,omitempty"`
	Reports        int        `json:"reports"`
	LostReports    int        `json:"lost_reports"`
	IntervalMS     float64    `json:"interval_ms"`
	PlayMS         float64    `json:"play_ms"`
	RebufferCount  float64    `json:"rebuffer_count"`
	RebufferMS     float64    `json:"rebuffer_ms"`
	RebufferRatio  *float64   `json:"rebuffer_ratio"`
	FreezeCount    float64    `json:"freeze_count"`
	FreezeMS       float64    `json:"freeze_ms"`
	FreezeRatio    *float64   `json:"freeze_ratio"`
	DroppedFrames  float64    `json:"dropped_frames"`
	Failures       int        `json:"failures"`
	FailureRate    *float64   `json:"failure_rate"`
	Loss           *float64   `json:"loss"`
	JitterBufferMS *float64   `json:"jitter_buffer_ms"`
	RTTMS          *float64   `json:"rtt_ms"`
	BitrateKbps    *float64   `json:"bitrate_kbps"`
	ThroughputKbps *float64   `json:"throughput_kbps"`
	LatencyMS      *float64   `json:"latency_ms"`
	BufferMS       *float64   `json:"buffer_ms"`
	StartupMS      Startup    `json:"startup_ms"`
}

// Startup summarizes startup delays.
type Startup struct {
	N   int      `json:"n"`
	P50 *float64 `json:"p50"`
	P95 *float64 `json:"p95"`
}

func ratio(num, den float64) *float64 {
	if den <= 0 {
		return nil
	}
	v := num / den
	return &v
}

func (a *qoeAgg) view(windowed bool) QoE {
	q := QoE{
		Reports: a.reports, LostReports: a.lost, IntervalMS: a.intervalMS, PlayMS: a.playMS,
		RebufferCount: a.rbN, RebufferMS: a.rbMS, RebufferRatio: ratio(a.rbMS, a.playMS+a.rbMS),
		FreezeCount: a.frzN, FreezeMS: a.frzMS, FreezeRatio: ratio(a.frzMS, a.intervalMS),
		DroppedFrames: a.dfa, Failures: a.failures, FailureRate: ratio(float64(a.failures), float64(a.reports)),
		Loss: a.loss.value(), JitterBufferMS: a.jbd.value(), RTTMS: a.rtt.value(), BitrateKbps: a.pb.value(),
		ThroughputKbps: a.mtp.value(), LatencyMS: a.ltc.value(), BufferMS: a.bl.value(),
		StartupMS: Startup{N: a.startupSeen},
	}
	if windowed {
		s, e := a.start, a.end
		q.Start, q.End = &s, &e
	}
	if len(a.startup) > 0 {
		s := slices.Clone(a.startup)
		slices.Sort(s)
		q.StartupMS.P50 = percentile(s, 0.50)
		q.StartupMS.P95 = percentile(s, 0.95)
	}
	return q
}

// percentile uses the nearest-rank method on sorted samples.
func percentile(sorted []float64, p float64) *float64 {
	rank := int(p*float64(len(sorted))+0.999999) - 1
	rank = max(0, min(rank, len(sorted)-1))
	v := sorted[rank]
	return &v
}

// qoeSeries is one group's aggregates: its whole life, and the most recent
// fixed windows (aligned to the window length), newest last.
type qoeSeries struct {
	total   qoeAgg
	windows []*qoeAgg
}

func (s *qoeSeries) add(now time.Time, window time.Duration, keep int, t *control.Telemetry, lost int) {
	s.total.add(t, lost)
	var cur *qoeAgg
	if n := len(s.windows); n > 0 && now.Before(s.windows[n-1].end) {
		cur = s.windows[n-1]
	} else {
		start := now.Truncate(window)
		cur = &qoeAgg{start: start, end: start.Add(window)}
		s.windows = append(s.windows, cur)
		if len(s.windows) > keep {
			s.windows = slices.Delete(s.windows, 0, len(s.windows)-keep)
		}
	}
	cur.add(t, lost)
}

// QoESeries is the JSON view of a group's telemetry aggregates.
type QoESeries struct {
	WindowMS int64 `json:"window_ms"`
	Total    QoE   `json:"total"`
	Current  *QoE  `json:"current"`  // the window now under way, if it has reports
	Previous *QoE  `json:"previous"` // the last complete window with reports
	Windows  []QoE `json:"windows"`  // recent windows with reports, newest first
}

func (s *qoeSeries) view(now time.Time, window time.Duration) QoESeries {
	out := QoESeries{WindowMS: window.Milliseconds(), Windows: []QoE{}}
	if s == nil {
		return out
	}
	out.Total = s.total.view(false)
	for i := len(s.windows) - 1; i >= 0; i-- {
		w := s.windows[i]
		v := w.view(true)
		out.Windows = append(out.Windows, v)
		switch {
		case now.Before(w.end) && out.Current == nil:
			out.Current = &v
		case !now.Before(w.end) && out.Previous == nil:
			out.Previous = &v
		}
	}
	return out
}
