package application

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/backchannel/backchannel/internal/apikeys"
	"github.com/backchannel/backchannel/internal/control"
	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/polls"
	"github.com/backchannel/backchannel/internal/problem"
)

// pollRequest is the body of POST /api/v1/polls.
type pollRequest struct {
	Stream     string          `json:"stream"`
	Question   string          `json:"question"`
	Choices    []string        `json:"choices"`
	DurationMS int64           `json:"duration_ms"`
	Where      json.RawMessage `json:"where,omitempty"` // predicate: JSON object or text string
}

func (s *Server) createPoll(w http.ResponseWriter, r *http.Request) {
	var req pollRequest
	if !decodeBody(w, r, &req) {
		return
	}
	where, fe := parseWhere("where", req.Where, "")
	if fe != nil {
		invalid(w, *fe)
		return
	}
	if media.ValidStreamName(req.Stream) && !mayStream(w, r, req.Stream) {
		return
	}
	p, err := s.CreatePoll(r.Context(), polls.Spec{Stream: req.Stream, Question: req.Question, Choices: req.Choices, DurationMS: req.DurationMS, Where: where})
	var ve *polls.ValidationError
	switch {
	case errors.As(err, &ve):
		invalid(w, ve.Fields...)
		return
	case err != nil:
		problem.Write(w, http.StatusServiceUnavailable, "could not create the poll: "+err.Error())
		return
	}
	w.Header().Set("Location", "/api/v1/polls/"+p.ID)
	writeJSONStatus(w, http.StatusCreated, s.pollView(p.ID))
}

// PollView is a poll with its current results.
type PollView struct {
	polls.Poll
	Audience int        `json:"audience"` // members of the poll's group now
	Results  ResultView `json:"results"`
}

// ResultView is a poll's counts.
type ResultView struct {
	Poll    string   `json:"poll"`
	Choices []string `json:"choices"`
	Counts  []int64  `json:"counts"`
	Total   int64    `json:"total"`
	Final   bool     `json:"final"`
}

func (s *Server) pollState(id string) (*pollState, polls.Poll, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ps := s.polls[id]
	if ps == nil {
		return nil, polls.Poll{}, false
	}
	return ps, ps.poll, true
}

func (s *Server) pollView(id string) PollView {
	ps, p, _ := s.pollState(id)
	counts, total, _ := ps.tally.Counts()
	return PollView{Poll: p, Audience: s.index.Count(p.Group),
		Results: ResultView{Poll: p.ID, Choices: p.Choices, Counts: counts, Total: total, Final: p.State == polls.StateClosed}}
}

// pollFor finds the poll of a request and checks the key covers its stream.
func (s *Server) pollFor(w http.ResponseWriter, r *http.Request) (*pollState, polls.Poll, bool) {
	ps, p, ok := s.pollState(r.PathValue("id"))
	if !ok {
		problem.Write(w, http.StatusNotFound, "no poll "+r.PathValue("id"))
		return nil, p, false
	}
	if !mayStream(w, r, p.Stream) {
		return nil, p, false
	}
	return ps, p, true
}

func (s *Server) listPolls(w http.ResponseWriter, r *http.Request) {
	pr := Principal(r)
	stream, state := r.URL.Query().Get("stream"), r.URL.Query().Get("state")
	if state != "" && state != polls.StateOpen && state != polls.StateClosed {
		invalid(w, polls.FieldError{Name: "state", Reason: "must be open or closed"})
		return
	}
	s.mu.Lock()
	var ids []string
	for id, ps := range s.polls {
		p := &ps.poll
		if pr.MayStream(p.Stream) && (stream == "" || p.Stream == stream) && (state == "" || p.State == state) {
			ids = append(ids, id)
		}
	}
	s.mu.Unlock()
	out := make([]PollView, 0, len(ids))
	for _, id := range ids {
		out = append(out, s.pollView(id))
	}
	slices.SortFunc(out, func(a, b PollView) int { return b.Created.Compare(a.Created) })
	writeJSON(w, map[string]any{"polls": out})
}

func (s *Server) getPoll(w http.ResponseWriter, r *http.Request) {
	if _, p, ok := s.pollFor(w, r); ok {
		writeJSON(w, s.pollView(p.ID))
	}
}

func (s *Server) closePoll(w http.ResponseWriter, r *http.Request) {
	_, p, ok := s.pollFor(w, r)
	if !ok {
		return
	}
	if _, err := s.ClosePoll(r.Context(), p.ID); err != nil {
		s.log.Warn("closing a poll", "poll", p.ID, "err", err)
	}
	writeJSON(w, s.pollView(p.ID))
}

func (s *Server) pollResults(w http.ResponseWriter, r *http.Request) {
	if _, p, ok := s.pollFor(w, r); ok {
		writeJSON(w, s.pollView(p.ID).Results)
	}
}

// BreakdownView is a poll's results broken down by one dimension.
type BreakdownView struct {
	Poll      string                `json:"poll"`
	Dimension string                `json:"dimension"`
	Choices   []string              `json:"choices"`
	Values    map[string]ValueCount `json:"values"` // dimension value → its counts
	Final     bool                  `json:"final"`
}

// ValueCount is the counts of the voters with one dimension value.
type ValueCount struct {
	Counts []int64 `json:"counts"`
	Total  int64   `json:"total"`
}

func breakdownOf(ps *pollState, p polls.Poll, dim string) (BreakdownView, bool) {
	by, ok := ps.tally.Breakdown(dim)
	if !ok {
		return BreakdownView{}, false
	}
	v := BreakdownView{Poll: p.ID, Dimension: dim, Choices: p.Choices, Values: make(map[string]ValueCount, len(by)), Final: p.State == polls.StateClosed}
	for val, counts := range by {
		var t int64
		for _, c := range counts {
			t += c
		}
		if val == "" {
			val = Unknown
		}
		v.Values[val] = ValueCount{Counts: counts, Total: t}
	}
	return v, true
}

func (s *Server) pollBreakdown(w http.ResponseWriter, r *http.Request) {
	ps, p, ok := s.pollFor(w, r)
	if !ok {
		return
	}
	dim := r.PathValue("dimension")
	v, ok := breakdownOf(ps, p, dim)
	if !ok {
		problem.Write(w, http.StatusNotFound, fmt.Sprintf("%q is not a dimension; use one of %s", dim, strings.Join(polls.Dimensions, ", ")))
		return
	}
	writeJSON(w, v)
}

// pollLive streams results to the broadcaster as server-sent events:
// one "results" event at once, then one at every change, at most one per
// LiveInterval, and a final one when the poll closes. ?by=dim adds the
// breakdown by that dimension to every event.
func (s *Server) pollLive(w http.ResponseWriter, r *http.Request) {
	ps, p, ok := s.pollFor(w, r)
	if !ok {
		return
	}
	dim := r.URL.Query().Get("by")
	if dim != "" && !polls.IsDimension(dim) {
		invalid(w, polls.FieldError{Name: "by", Reason: "must be one of " + strings.Join(polls.Dimensions, ", ")})
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		problem.Write(w, http.StatusInternalServerError, "streaming unsupported")
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	var last time.Time
	keepalive := time.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	for {
		changed := ps.watch()
		if ps.closed.Load() {
			// The poll's other fields never change.
			p.State = polls.StateClosed
		}
		counts, total, version := ps.tally.Counts()
		ev := LiveEvent{ResultView: ResultView{Poll: p.ID, Choices: p.Choices, Counts: counts, Total: total, Final: p.State == polls.StateClosed},
			Version: version, At: s.now().UnixMilli()}
		if dim != "" {
			b, _ := breakdownOf(ps, p, dim)
			ev.Breakdown = &b
		}
		data, _ := json.Marshal(ev)
		_ = rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := fmt.Fprintf(w, "event: results\nid: %d\ndata: %s\n\n", version, data); err != nil {
			return
		}
		flusher.Flush()
		last = time.Now()
		if ev.Final {
			return
		}
		// Wait for a change, then let LiveInterval pass since the last
		// event: changes in between are coalesced into the next one.
	wait:
		for {
			select {
			case <-r.Context().Done():
				return
			case <-keepalive.C:
				if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil {
					return
				}
				flusher.Flush()
			case <-changed:
				break wait
			}
		}
		if d := s.cfg.LiveInterval - time.Since(last); d > 0 && !sleepCtx(r.Context(), d) {
			return
		}
	}
}

// LiveEvent is the data of a live results event.
type LiveEvent struct {
	ResultView
	Version   uint64         `json:"version"`
	At        int64          `json:"at"` // server time, unix ms
	Breakdown *BreakdownView `json:"breakdown,omitempty"`
}

// brandingRequest is the body of PUT /api/v1/streams/{name}/branding.
type brandingRequest struct {
	Title    string `json:"title"`
	LogoURL  string `json:"logo_url"`
	Upcoming []struct {
		Title    string `json:"title"`
		StartsAt int64  `json:"starts_at"`
		Stream   string `json:"stream"`
	} `json:"upcoming"`
}

func (s *Server) getBranding(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !media.ValidStreamName(name) || !mayStream(w, r, name) {
		if !media.ValidStreamName(name) {
			problem.Write(w, http.StatusNotFound, "no such stream")
		}
		return
	}
	s.mu.Lock()
	b, ok := s.branding[name]
	s.mu.Unlock()
	if !ok {
		b = control.Branding{Stream: name}
	}
	writeJSON(w, b)
}

func (s *Server) putBranding(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !media.ValidStreamName(name) {
		problem.Write(w, http.StatusNotFound, "no such stream")
		return
	}
	if !mayStream(w, r, name) {
		return
	}
	var req brandingRequest
	if !decodeBody(w, r, &req) {
		return
	}
	var fields []polls.FieldError
	bad := func(n, why string) { fields = append(fields, polls.FieldError{Name: n, Reason: why}) }
	if len([]rune(req.Title)) > 140 {
		bad("title", "at most 140 characters")
	}
	if req.LogoURL != "" {
		u, err := url.Parse(req.LogoURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || len(req.LogoURL) > 2048 {
			bad("logo_url", "must be an absolute http(s) URL of at most 2048 bytes")
		}
	}
	if len(req.Upcoming) > 10 {
		bad("upcoming", "at most 10 entries")
	}
	b := control.Branding{Stream: name, Title: strings.TrimSpace(req.Title), LogoURL: req.LogoURL}
	for i, u := range req.Upcoming {
		if t := strings.TrimSpace(u.Title); t == "" || len([]rune(t)) > 140 {
			bad(fmt.Sprintf("upcoming[%d].title", i), "1-140 characters")
		}
		if u.StartsAt <= 0 {
			bad(fmt.Sprintf("upcoming[%d].starts_at", i), "a time in unix milliseconds")
		}
		if u.Stream != "" && !media.ValidStreamName(u.Stream) {
			bad(fmt.Sprintf("upcoming[%d].stream", i), "not a valid stream name")
		}
		b.Upcoming = append(b.Upcoming, control.Upcoming{Title: strings.TrimSpace(u.Title), StartsAt: u.StartsAt, Stream: u.Stream})
	}
	if len(fields) > 0 {
		invalid(w, fields...)
		return
	}
	if err := s.SetBranding(r, b); err != nil {
		problem.Write(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	writeJSON(w, b)
}

// SetBranding stores a stream's branding and pushes it to the stream's
// group; viewers who start watching later get it with their endpoint.
func (s *Server) SetBranding(r *http.Request, b control.Branding) error {
	doc, _ := json.Marshal(b)
	if err := s.store.Put(r.Context(), kindBranding, b.Stream, doc); err != nil {
		return fmt.Errorf("saving branding: %w", err)
	}
	s.mu.Lock()
	s.branding[b.Stream] = b
	s.mu.Unlock()
	return s.PublishGroup(r.Context(), "stream:"+b.Stream, b, true)
}

// keyRequest is the body of POST /api/v1/keys.
type keyRequest struct {
	Name    string   `json:"name"`
	Role    string   `json:"role"`
	Streams []string `json:"streams"`
}

func (s *Server) listKeys(w http.ResponseWriter, r *http.Request) {
	if !operatorOnly(w, r) {
		return
	}
	keys := s.keys.List()
	for i := range keys {
		keys[i].Hash = ""
	}
	writeJSON(w, map[string]any{"keys": keys})
}

func (s *Server) createKey(w http.ResponseWriter, r *http.Request) {
	if !operatorOnly(w, r) {
		return
	}
	var req keyRequest
	if !decodeBody(w, r, &req) {
		return
	}
	key, token, err := s.keys.Create(r.Context(), req.Name, req.Role, req.Streams, media.ValidStreamName)
	if err != nil {
		if field, reason, ok := strings.Cut(err.Error(), ": "); ok && !strings.HasPrefix(field, "apikeys") {
			invalid(w, polls.FieldError{Name: field, Reason: reason})
			return
		}
		problem.Write(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	key.Hash = ""
	w.Header().Set("Location", "/api/v1/keys/"+key.ID)
	writeJSONStatus(w, http.StatusCreated, struct {
		apikeys.Key
		Token string `json:"token"`
	}{key, token})
}

func (s *Server) deleteKey(w http.ResponseWriter, r *http.Request) {
	if !operatorOnly(w, r) {
		return
	}
	ok, err := s.keys.Revoke(r.Context(), r.PathValue("id"))
	switch {
	case err != nil:
		problem.Write(w, http.StatusServiceUnavailable, err.Error())
	case !ok:
		problem.Write(w, http.StatusNotFound, "no key "+r.PathValue("id"))
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}
