package application

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/backchannel/backchannel/internal/problem"
	"github.com/backchannel/backchannel/internal/record"
)

// Recorder is the recording service the API drives (internal/record's
// Recorder in the embedded deployment).
type Recorder interface {
	Start(stream string) (record.Recording, error)
	Stop(stream string) (record.Recording, error)
	Get(id string) (record.Recording, bool)
	List() []record.Recording
}

// RecordingAction is the body of POST /api/v1/streams/{name}/recording.
type RecordingAction struct {
	Action string `json:"action"` // "start" (default) or "stop"
}

// recordingRoutes registers the recording API (operator only):
//
//	POST   /api/v1/streams/{name}/recording   {"action":"start"|"stop"}
//	DELETE /api/v1/streams/{name}/recording   stops
//	GET    /api/v1/recordings                 newest first
//	GET    /api/v1/recordings/{id}
func (s *Server) recordingRoutes(mux *http.ServeMux) {
	mux.Handle("/api/v1/streams/{name}/recording", s.auth(http.HandlerFunc(s.streamRecording)))
	mux.Handle("/api/v1/recordings", s.auth(get(s.listRecordings)))
	mux.Handle("/api/v1/recordings/{id}", s.auth(get(s.getRecording)))
}

func (s *Server) recorder(w http.ResponseWriter) Recorder {
	if s.cfg.Recorder == nil {
		problem.Write(w, http.StatusNotImplemented, "recording is not available on this deployment")
	}
	return s.cfg.Recorder
}

func (s *Server) streamRecording(w http.ResponseWriter, r *http.Request) {
	name, ok := streamParam(w, r) // also checks the key covers the stream
	if !ok {
		return
	}
	action := "stop"
	switch r.Method {
	case http.MethodDelete:
	case http.MethodPost:
		var body RecordingAction
		b, err := io.ReadAll(io.LimitReader(r.Body, 4096))
		if err != nil {
			problem.Write(w, http.StatusBadRequest, "cannot read the body")
			return
		}
		if len(b) > 0 {
			if err := json.Unmarshal(b, &body); err != nil {
				problem.Write(w, http.StatusBadRequest, "body must be JSON: {\"action\":\"start\"|\"stop\"}")
				return
			}
		}
		switch body.Action {
		case "", "start":
			action = "start"
		case "stop":
		default:
			problem.Write(w, http.StatusBadRequest, "action must be \"start\" or \"stop\"")
			return
		}
	default:
		w.Header().Set("Allow", "POST, DELETE")
		problem.Write(w, http.StatusMethodNotAllowed, "POST starts or stops a recording, DELETE stops it")
		return
	}
	rec := s.recorder(w)
	if rec == nil {
		return
	}
	var out record.Recording
	var err error
	if action == "start" {
		out, err = rec.Start(name)
	} else {
		out, err = rec.Stop(name)
	}
	switch {
	case errors.Is(err, record.ErrOffline):
		problem.Write(w, http.StatusConflict, "stream "+name+" is not on air")
	case errors.Is(err, record.ErrAlreadyRecording):
		problem.Write(w, http.StatusConflict, "stream "+name+" is already being recorded")
	case errors.Is(err, record.ErrUnsupported):
		problem.Write(w, http.StatusUnsupportedMediaType, err.Error())
	case errors.Is(err, record.ErrNotRecording):
		problem.Write(w, http.StatusNotFound, "stream "+name+" is not being recorded")
	case err != nil:
		s.log.Error("recording", "stream", name, "action", action, "err", err)
		problem.Write(w, http.StatusInternalServerError, "recording failed: "+err.Error())
	case action == "start":
		w.Header().Set("Location", "/api/v1/recordings/"+out.ID)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(out)
	default:
		writeJSON(w, out)
	}
}

// listRecordings lists the recordings of the streams the key covers.
func (s *Server) listRecordings(w http.ResponseWriter, r *http.Request) {
	rec := s.recorder(w)
	if rec == nil {
		return
	}
	p := Principal(r)
	out := []record.Recording{}
	for _, x := range rec.List() {
		if p.MayStream(x.Stream) {
			out = append(out, x)
		}
	}
	writeJSON(w, map[string]any{"recordings": out})
}

func (s *Server) getRecording(w http.ResponseWriter, r *http.Request) {
	rec := s.recorder(w)
	if rec == nil {
		return
	}
	out, ok := rec.Get(r.PathValue("id"))
	if !ok || !Principal(r).MayStream(out.Stream) {
		// Another stream's recording is not acknowledged to exist.
		problem.Write(w, http.StatusNotFound, "no such recording")
		return
	}
	writeJSON(w, out)
}
