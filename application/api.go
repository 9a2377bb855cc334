package application

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/backchannel/backchannel/groups"
	"github.com/backchannel/backchannel/internal/apikeys"
	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/polls"
	"github.com/backchannel/backchannel/internal/problem"
)

// Routes registers the REST API under /api/v1 on mux (docs/api.md,
// docs/openapi.yaml). Every route needs "Authorization: Bearer <key>": the
// operator key, or a key created through /api/v1/keys (operator, or
// broadcaster scoped to named streams).
func (s *Server) Routes(mux *http.ServeMux) {
	routes := &routeTable{paths: http.NewServeMux(), allow: map[string][]string{}}
	handle := func(pattern string, f http.HandlerFunc) {
		mux.Handle(pattern, s.auth(f))
		routes.add(pattern)
	}
	handle("GET /api/v1/streams", s.listStreams)
	handle("GET /api/v1/streams/{name}", s.getStream)
	handle("GET /api/v1/streams/{name}/branding", s.getBranding)
	handle("PUT /api/v1/streams/{name}/branding", s.putBranding)

	handle("GET /api/v1/groups", s.listGroups)
	handle("POST /api/v1/groups", s.createGroup)
	handle("GET /api/v1/groups/{id}", s.getGroup)
	handle("DELETE /api/v1/groups/{id}", s.deleteGroup)

	handle("GET /api/v1/polls", s.listPolls)
	handle("POST /api/v1/polls", s.createPoll)
	handle("GET /api/v1/polls/{id}", s.getPoll)
	handle("POST /api/v1/polls/{id}/close", s.closePoll)
	handle("GET /api/v1/polls/{id}/results", s.pollResults)
	handle("GET /api/v1/polls/{id}/results/{dimension}", s.pollBreakdown)
	handle("GET /api/v1/polls/{id}/live", s.pollLive)

	handle("GET /api/v1/keys", s.listKeys)
	handle("POST /api/v1/keys", s.createKey)
	handle("DELETE /api/v1/keys/{id}", s.deleteKey)

	handle("POST /api/v1/notices", s.postNotice)
	s.recordingRoutes(mux)

	mux.Handle("/api/v1/", s.auth(http.HandlerFunc(routes.notFound)))
}

// routeTable tells a wrong method (405, with Allow) from an unknown path
// (404) for requests that reach the catch-all.
type routeTable struct {
	paths *http.ServeMux // method-less patterns
	allow map[string][]string
}

func (t *routeTable) add(pattern string) {
	method, path, _ := strings.Cut(pattern, " ")
	if _, ok := t.allow[path]; !ok {
		t.paths.Handle(path, http.NotFoundHandler())
	}
	t.allow[path] = append(t.allow[path], method)
}

func (t *routeTable) notFound(w http.ResponseWriter, r *http.Request) {
	if _, pattern := t.paths.Handler(r); pattern != "" {
		methods := t.allow[pattern]
		if slices.Contains(methods, http.MethodGet) {
			methods = append(methods, http.MethodHead)
		}
		w.Header().Set("Allow", strings.Join(methods, ", "))
		problem.Write(w, http.StatusMethodNotAllowed, r.Method+" is not allowed on "+r.URL.Path+"; use "+strings.Join(methods, " or "))
		return
	}
	problem.Write(w, http.StatusNotFound, "no such API route: "+r.URL.Path)
}

type principalKey struct{}

// Principal returns who an authenticated API request comes from.
func Principal(r *http.Request) apikeys.Principal {
	p, _ := r.Context().Value(principalKey{}).(apikeys.Principal)
	return p
}

// auth admits requests with a valid Bearer key and records the principal
// for the handler, which checks the key's scope.
func (s *Server) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		p, valid := s.keys.Authenticate(r.Context(), strings.TrimSpace(token))
		if !ok || !valid {
			w.Header().Set("WWW-Authenticate", `Bearer realm="backchannel"`)
			problem.Write(w, http.StatusUnauthorized, "send an API key as Authorization: Bearer <key>")
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	})
}

// get restricts a handler to GET and HEAD, for routes registered without a
// method pattern.
func get(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			problem.Write(w, http.StatusMethodNotAllowed, "this route only answers GET")
			return
		}
		h(w, r)
	})
}

// operatorOnly answers 403 unless the request has an operator key.
func operatorOnly(w http.ResponseWriter, r *http.Request) bool {
	if Principal(r).Operator() {
		return true
	}
	problem.Write(w, http.StatusForbidden, "this route needs an operator key")
	return false
}

// mayStream answers 403 unless the request's key covers the stream.
func mayStream(w http.ResponseWriter, r *http.Request, stream string) bool {
	if Principal(r).MayStream(stream) {
		return true
	}
	problem.Write(w, http.StatusForbidden, "your key does not cover stream "+stream)
	return false
}

func writeJSON(w http.ResponseWriter, v any) { writeJSONStatus(w, http.StatusOK, v) }

func writeJSONStatus(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// invalid answers 422 with RFC 9457 invalid-params naming the fields.
func invalid(w http.ResponseWriter, fields ...polls.FieldError) {
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = f.Name + ": " + f.Reason
	}
	problem.WriteDetails(w, problem.Details{
		Status: http.StatusUnprocessableEntity, Detail: strings.Join(names, "; "),
		Extra: map[string]any{"invalid-params": fields},
	})
}

// decodeBody reads a JSON object of at most 64 KiB into v.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		problem.Write(w, http.StatusUnsupportedMediaType, "send application/json")
		return false
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	if err := dec.Decode(v); err != nil {
		msg := "the body is not a JSON object of the expected shape: " + err.Error()
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			invalid(w, polls.FieldError{Name: te.Field, Reason: "has the wrong JSON type, " + te.Value})
			return false
		}
		problem.Write(w, http.StatusBadRequest, msg)
		return false
	}
	return true
}

// StreamView is one entry of GET /api/v1/streams.
type StreamView struct {
	Name      string            `json:"name"`
	State     string            `json:"state"`
	Protocol  string            `json:"protocol,omitempty"`
	StartedAt *time.Time        `json:"started_at,omitempty"`
	Publisher string            `json:"publisher,omitempty"` // the publisher's address
	Node      string            `json:"node,omitempty"`      // the ingest node it publishes to
	Tracks    []media.TrackInfo `json:"tracks"`              // with measured bitrate and frame rate when known
	Viewers   int               `json:"viewers"`             // links watching, across connection servers
	Audio     string            `json:"audio,omitempty"`
}

func (s *Server) streamView(name string) StreamView {
	s.mu.Lock()
	info, live := s.live[name]
	s.mu.Unlock()
	if live && s.cfg.StreamInfo != nil {
		// The on-air event's info was taken at the start; this one has
		// the measured bitrate and frame rate.
		if fresh, ok := s.cfg.StreamInfo(name); ok {
			info = fresh
		}
	}
	v := StreamView{Name: name, State: "offline", Tracks: []media.TrackInfo{}}
	if live {
		v.State, v.Protocol, v.Publisher, v.Node = "live", info.Protocol, info.Publisher, info.Node
		t := info.StartedAt
		v.StartedAt = &t
		if info.Tracks != nil {
			v.Tracks = info.Tracks
		}
		v.Audio = s.audioNote(name)
	}
	v.Viewers = s.index.Count(groups.AutoID(groups.AttrStream, name))
	return v
}

func (s *Server) listStreams(w http.ResponseWriter, r *http.Request) {
	p := Principal(r)
	s.mu.Lock()
	names := make([]string, 0, len(s.live))
	for name := range s.live {
		if p.MayStream(name) {
			names = append(names, name)
		}
	}
	s.mu.Unlock()
	slices.Sort(names)
	out := make([]StreamView, len(names))
	for i, n := range names {
		out[i] = s.streamView(n)
	}
	writeJSON(w, map[string]any{"streams": out})
}

func (s *Server) getStream(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !media.ValidStreamName(name) {
		problem.Write(w, http.StatusNotFound, media.StreamNameRule)
		return
	}
	if !mayStream(w, r, name) {
		return
	}
	writeJSON(w, s.streamView(name))
}

// GroupView is a group as the API shows it.
type GroupView struct {
	ID         string                    `json:"id"`
	Kind       string                    `json:"kind"` // automatic or custom
	Definition *groups.Predicate         `json:"definition"`
	Text       string                    `json:"text"`
	Members    int                       `json:"members"`
	QoE        *QoESeries                `json:"qoe,omitempty"`
	Breakdown  map[string]map[string]int `json:"breakdown,omitempty"` // dimension → value → members
}

// groupVisible reports whether a key may see a group: operators see all,
// broadcasters their streams' groups.
func groupVisible(p apikeys.Principal, id string) bool {
	if p.Operator() {
		return true
	}
	attr, v, ok := groups.SplitAutoID(id)
	return ok && attr == groups.AttrStream && p.MayStream(v)
}

func (s *Server) listGroups(w http.ResponseWriter, r *http.Request) {
	p := Principal(r)
	var out []GroupView
	for id, n := range s.index.AutoCounts() {
		if !groupVisible(p, id) {
			continue
		}
		g, _ := groups.AutoGroup(id)
		out = append(out, GroupView{ID: id, Kind: "automatic", Definition: g.Pred, Text: g.Pred.String(), Members: n})
	}
	if p.Operator() {
		for _, g := range s.index.CustomGroups() {
			out = append(out, GroupView{ID: g.ID, Kind: "custom", Definition: g.Pred, Text: g.Pred.String(), Members: s.index.Count(g.ID)})
		}
	}
	if out == nil {
		out = []GroupView{}
	}
	slices.SortFunc(out, func(a, b GroupView) int { return strings.Compare(a.ID, b.ID) })
	writeJSON(w, map[string]any{"groups": out})
}

func (s *Server) getGroup(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	g, ok := s.index.Group(id)
	if !ok {
		problem.Write(w, http.StatusNotFound, "no group "+id+": automatic groups are global and attribute:value with a known attribute")
		return
	}
	if !groupVisible(Principal(r), id) {
		problem.Write(w, http.StatusForbidden, "your key does not cover group "+id)
		return
	}
	dims, err := breakdownDims(r.URL.Query().Get("breakdown"))
	if err != nil {
		invalid(w, polls.FieldError{Name: "breakdown", Reason: err.Error()})
		return
	}
	kind := "automatic"
	if _, auto := groups.AutoGroup(id); !auto {
		kind = "custom"
	}
	s.mu.Lock()
	q := s.qoe[id].view(s.now(), s.cfg.QoEWindow)
	s.mu.Unlock()
	v := GroupView{ID: id, Kind: kind, Definition: g.Pred, Text: g.Pred.String(), Members: s.index.Count(id), QoE: &q}
	if len(dims) > 0 {
		v.Breakdown = s.memberBreakdown(id, dims)
	}
	writeJSON(w, v)
}

// breakdownDims parses ?breakdown=country,device ("all": every dimension).
func breakdownDims(q string) ([]string, error) {
	if q == "" {
		return nil, nil
	}
	if q == "all" {
		return append([]string{groups.AttrStream}, polls.Dimensions...), nil
	}
	var out []string
	for _, d := range strings.Split(q, ",") {
		d = strings.TrimSpace(d)
		if !polls.IsDimension(d) && d != groups.AttrStream && !(strings.HasPrefix(d, "x-") && groups.ValidAttrName(d)) {
			return nil, fmt.Errorf("%q is not a dimension (use all, or any of stream, %s, x-*)", d, strings.Join(polls.Dimensions, ", "))
		}
		out = append(out, d)
	}
	return out, nil
}

// memberBreakdown counts a group's members by the values of dimensions.
func (s *Server) memberBreakdown(id string, dims []string) map[string]map[string]int {
	out := make(map[string]map[string]int, len(dims))
	for _, d := range dims {
		out[d] = map[string]int{}
	}
	for _, sid := range s.index.Members(id) {
		attrs, ok := s.index.Attrs(sid)
		if !ok {
			continue
		}
		for _, d := range dims {
			out[d][attrs[d]]++
		}
	}
	return out
}

// groupRequest creates a custom group from a predicate in canonical JSON
// (definition) or text form (text).
type groupRequest struct {
	ID         string          `json:"id"`
	Definition json.RawMessage `json:"definition,omitempty"`
	Text       string          `json:"text,omitempty"`
}

func parseWhere(field string, def json.RawMessage, text string) (*groups.Predicate, *polls.FieldError) {
	switch {
	case len(def) > 0 && text != "":
		return nil, &polls.FieldError{Name: field, Reason: "give definition or text, not both"}
	case len(def) > 0:
		if def[0] == '"' {
			// A text predicate in a JSON string.
			var t string
			_ = json.Unmarshal(def, &t)
			text = t
			break
		}
		p, err := groups.ParsePredicateJSON(def)
		if err != nil {
			return nil, &polls.FieldError{Name: field, Reason: err.Error()}
		}
		return p, nil
	}
	if text == "" {
		return nil, nil
	}
	p, err := groups.ParsePredicateText(text)
	if err != nil {
		return nil, &polls.FieldError{Name: field, Reason: err.Error()}
	}
	return p, nil
}

func (s *Server) createGroup(w http.ResponseWriter, r *http.Request) {
	if !operatorOnly(w, r) {
		return
	}
	var req groupRequest
	if !decodeBody(w, r, &req) {
		return
	}
	var fields []polls.FieldError
	if err := groups.ValidCustomID(req.ID); err != nil {
		fields = append(fields, polls.FieldError{Name: "id", Reason: err.Error()})
	} else if _, auto := groups.AutoGroup(req.ID); auto || isPollGroup(req.ID) {
		fields = append(fields, polls.FieldError{Name: "id", Reason: "names an automatic or poll group"})
	}
	pred, fe := parseWhere("definition", req.Definition, req.Text)
	switch {
	case fe != nil:
		fields = append(fields, *fe)
	case pred == nil:
		fields = append(fields, polls.FieldError{Name: "definition", Reason: "a predicate is required (definition as JSON, or text)"})
	}
	if len(fields) > 0 {
		invalid(w, fields...)
		return
	}
	g := groups.Group{ID: req.ID, Pred: pred}
	if err := s.DefineGroup(r.Context(), g); err != nil {
		problem.Write(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	w.Header().Set("Location", "/api/v1/groups/"+g.ID)
	writeJSONStatus(w, http.StatusCreated, GroupView{ID: g.ID, Kind: "custom", Definition: pred, Text: pred.String(), Members: s.index.Count(g.ID)})
}

// DefineGroup stores a custom group, computes its membership and sends
// the definition to every connection server, which recreates the
// membership from its own profiles.
func (s *Server) DefineGroup(ctx context.Context, g groups.Group) error {
	if err := s.store.Put(ctx, kindGroup, g.ID, []byte(g.Pred.JSON())); err != nil {
		return fmt.Errorf("saving the group: %w", err)
	}
	if _, err := s.index.Define(g); err != nil {
		return err
	}
	s.toAllConns(ctx, groups.DefineGroup(g).Encode())
	return nil
}

func (s *Server) deleteGroup(w http.ResponseWriter, r *http.Request) {
	if !operatorOnly(w, r) {
		return
	}
	id := r.PathValue("id")
	if _, auto := groups.AutoGroup(id); auto || isPollGroup(id) {
		problem.Write(w, http.StatusConflict, "automatic and poll groups cannot be deleted")
		return
	}
	if err := s.store.Delete(r.Context(), kindGroup, id); err != nil {
		problem.Write(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	if !s.index.Undefine(id) {
		problem.Write(w, http.StatusNotFound, "no custom group "+id)
		return
	}
	s.toAllConns(r.Context(), groups.UndefineGroup(id).Encode())
	w.WriteHeader(http.StatusNoContent)
}
