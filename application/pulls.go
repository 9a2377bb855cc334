package application

import (
	"errors"
	"net/http"
	"time"

	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/problem"
)

// PullSpec asks an ingest node to pull a stream from an RTSP URL (an IP
// camera): always, or on demand while someone watches.
type PullSpec struct {
	Stream   string `json:"stream"`
	URL      string `json:"url"`
	OnDemand bool   `json:"on_demand"`
}

// PullView is a configured pull and how it is doing.
type PullView struct {
	PullSpec
	State    string    `json:"state"` // idle, connecting, live, retrying
	Error    string    `json:"error,omitempty"`
	Since    time.Time `json:"since"`
	Restarts int       `json:"restarts"`
}

// Errors a Pulls implementation reports; other errors are the caller's
// (an invalid spec) and answer 400.
var (
	ErrPullExists = errors.New("a pull for this stream exists")
	ErrNoSuchPull = errors.New("no pull for this stream")
)

// Pulls manages the RTSP pulls of the ingest tier.
type Pulls interface {
	AddPull(PullSpec) (PullView, error)
	RemovePull(stream string) error
	Pull(stream string) (PullView, bool)
	ListPulls() []PullView
}

func (s *Server) pullRoutes(mux *http.ServeMux, pulls Pulls) {
	// Pulls make this node dial out to arbitrary URLs: operators only.
	mux.Handle("/api/v1/pulls", s.auth(operatorsOnly{methods{
		http.MethodGet: func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, map[string]any{"pulls": pulls.ListPulls()})
		},
		http.MethodPost: func(w http.ResponseWriter, r *http.Request) { s.addPull(w, r, pulls) },
	}}))
	mux.Handle("/api/v1/pulls/{stream}", s.auth(operatorsOnly{methods{
		http.MethodGet: func(w http.ResponseWriter, r *http.Request) {
			v, ok := pulls.Pull(r.PathValue("stream"))
			if !ok {
				problem.Write(w, http.StatusNotFound, "no pull for stream "+r.PathValue("stream"))
				return
			}
			writeJSON(w, v)
		},
		http.MethodDelete: func(w http.ResponseWriter, r *http.Request) {
			switch err := pulls.RemovePull(r.PathValue("stream")); {
			case err == nil:
				w.WriteHeader(http.StatusNoContent)
			case errors.Is(err, ErrNoSuchPull):
				problem.Write(w, http.StatusNotFound, "no pull for stream "+r.PathValue("stream"))
			default:
				problem.Write(w, http.StatusInternalServerError, err.Error())
			}
		},
	}}))
}

// operatorsOnly answers 403 to keys that are not an operator's.
type operatorsOnly struct{ next http.Handler }

func (o operatorsOnly) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if operatorOnly(w, r) {
		o.next.ServeHTTP(w, r)
	}
}

func (s *Server) addPull(w http.ResponseWriter, r *http.Request, pulls Pulls) {
	var spec PullSpec
	if !decodeJSON(w, r, &spec) {
		return
	}
	if !media.ValidStreamName(spec.Stream) {
		problem.Write(w, http.StatusBadRequest, "stream: 1-64 characters of A-Z a-z 0-9 _ . -")
		return
	}
	v, err := pulls.AddPull(spec)
	switch {
	case errors.Is(err, ErrPullExists):
		problem.Write(w, http.StatusConflict, "stream "+spec.Stream+" already has a pull; DELETE it first")
		return
	case err != nil:
		problem.Write(w, http.StatusBadRequest, err.Error())
		return
	}
	w.Header().Set("Location", "/api/v1/pulls/"+spec.Stream)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	writeJSONStatus(w, http.StatusCreated, v)
}
