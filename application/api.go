package application

import (
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/backchannel/backchannel/groups"
	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/problem"
)

// Routes registers the REST API under /api/v1 on mux. Every route needs
// "Authorization: Bearer <OperatorKey>".
func (s *Server) Routes(mux *http.ServeMux) {
	mux.Handle("/api/v1/streams", s.auth(get(s.listStreams)))
	mux.Handle("/api/v1/groups", s.auth(get(s.listGroups)))
	mux.Handle("/api/v1/groups/{id}", s.auth(get(s.getGroup)))
	s.recordingRoutes(mux)
	mux.Handle("/api/v1/", s.auth(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		problem.Write(w, http.StatusNotFound, "no such API route: "+r.URL.Path)
	})))
}

func (s *Server) auth(next http.Handler) http.Handler {
	want := []byte("Bearer " + s.cfg.OperatorKey)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="backchannel"`)
			problem.Write(w, http.StatusUnauthorized, "send the operator API key as Authorization: Bearer <key>")
			return
		}
		next.ServeHTTP(w, r)
	})
}

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

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// StreamView is one entry of GET /api/v1/streams.
type StreamView struct {
	Name      string            `json:"name"`
	State     string            `json:"state"`
	Protocol  string            `json:"protocol,omitempty"`
	StartedAt time.Time         `json:"started_at"`
	Tracks    []media.TrackInfo `json:"tracks"`
	Viewers   int               `json:"viewers"` // links watching, across connection servers
}

func (s *Server) listStreams(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	out := make([]StreamView, 0, len(s.live))
	for name, info := range s.live {
		tracks := info.Tracks
		if tracks == nil {
			tracks = []media.TrackInfo{}
		}
		out = append(out, StreamView{Name: name, State: "live", Protocol: info.Protocol, StartedAt: info.StartedAt, Tracks: tracks})
	}
	s.mu.Unlock()
	for i := range out {
		out[i].Viewers = s.index.Count(groups.AutoID(groups.AttrStream, out[i].Name))
	}
	slices.SortFunc(out, func(a, b StreamView) int { return strings.Compare(a.Name, b.Name) })
	writeJSON(w, map[string]any{"streams": out})
}

// GroupView is a group as the API shows it.
type GroupView struct {
	ID         string            `json:"id"`
	Kind       string            `json:"kind"` // automatic or custom
	Definition *groups.Predicate `json:"definition"`
	Text       string            `json:"text"`
	Members    int               `json:"members"`
	QoE        *QoESeries        `json:"qoe,omitempty"`
}

func (s *Server) listGroups(w http.ResponseWriter, _ *http.Request) {
	var out []GroupView
	for id, n := range s.index.AutoCounts() {
		g, _ := groups.AutoGroup(id)
		out = append(out, GroupView{ID: id, Kind: "automatic", Definition: g.Pred, Text: g.Pred.String(), Members: n})
	}
	for _, g := range s.index.CustomGroups() {
		out = append(out, GroupView{ID: g.ID, Kind: "custom", Definition: g.Pred, Text: g.Pred.String(), Members: s.index.Count(g.ID)})
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
	kind := "automatic"
	if _, auto := groups.AutoGroup(id); !auto {
		kind = "custom"
	}
	s.mu.Lock()
	q := s.qoe[id].view(s.now(), s.cfg.QoEWindow)
	s.mu.Unlock()
	writeJSON(w, GroupView{ID: id, Kind: kind, Definition: g.Pred, Text: g.Pred.String(), Members: s.index.Count(id), QoE: &q})
}
