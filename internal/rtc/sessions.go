package rtc

import (
	"net/http"
	"strings"

	"github.com/pion/webrtc/v4"

	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/problem"
)

// Allowed methods on a WHIP/WHEP endpoint and on a session URL.
const (
	EndpointMethods = "POST, OPTIONS"
	SessionMethods  = "DELETE, OPTIONS"
)

// SessionRoutes is the HTTP face of a WHIP or WHEP server (RFC 9725 and
// the WHEP draft share it): POST {Prefix}{stream} with an SDP offer makes
// a session, DELETE on {Prefix}{stream}/{id} ends it, OPTIONS answers
// preflights; everything else is 404 or 405 as problem+json.
type SessionRoutes struct {
	Prefix string // "/whip/"; requests may also arrive with it stripped
	Kind   string // "WHIP", in error details

	// Create answers a POST whose method and stream name are checked.
	Create func(w http.ResponseWriter, r *http.Request, stream string)
	// End ends session id of stream; false when there is no such session.
	End func(stream, id string) bool
	// Reject answers a refused request (reason labels the server's metric).
	Reject func(w http.ResponseWriter, reason string, status int, detail string)
}

func (sr SessionRoutes) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	SetCORS(w.Header())
	rest, ok := strings.CutPrefix(r.URL.Path, sr.Prefix)
	if !ok {
		rest = strings.TrimPrefix(r.URL.Path, "/") // mounted with StripPrefix
	}
	parts := strings.Split(rest, "/")
	switch {
	case len(parts) == 1 && parts[0] != "":
		sr.serveEndpoint(w, r, parts[0])
	case len(parts) == 2 && parts[0] != "" && parts[1] != "":
		sr.serveSession(w, r, parts[0], parts[1])
	default:
		problem.Write(w, http.StatusNotFound, "use "+sr.Prefix+"{stream}")
	}
}

func (sr SessionRoutes) serveEndpoint(w http.ResponseWriter, r *http.Request, stream string) {
	switch r.Method {
	case http.MethodOptions:
		WritePreflight(w, EndpointMethods)
	case http.MethodPost:
		if !media.ValidStreamName(stream) {
			sr.Reject(w, "bad_stream", http.StatusBadRequest, media.StreamNameRule)
			return
		}
		sr.Create(w, r, stream)
	default:
		WriteMethodNotAllowed(w, EndpointMethods)
	}
}

func (sr SessionRoutes) serveSession(w http.ResponseWriter, r *http.Request, stream, id string) {
	switch r.Method {
	case http.MethodOptions:
		WritePreflight(w, SessionMethods)
	case http.MethodDelete:
		if !sr.End(stream, id) {
			problem.Write(w, http.StatusNotFound, "no such "+sr.Kind+" session")
			return
		}
		w.WriteHeader(http.StatusOK)
	default:
		// No trickle ICE or ICE restart (PATCH): answers carry every
		// candidate, and a client whose network changes starts again
		// (a publisher takes its own stream over).
		WriteMethodNotAllowed(w, SessionMethods)
	}
}

// WriteCreated answers a POST that made a session: 201 with the answer
// SDP, the session URL (Location), its entity tag and the ICE servers as
// Link headers. Headers set on w before the call are kept.
func WriteCreated(w http.ResponseWriter, location, etag string, iceServers []webrtc.ICEServer, answer string) {
	h := w.Header()
	h.Set("Content-Type", ContentTypeSDP)
	h.Set("Location", location)
	h.Set("ETag", etag)
	h.Set("Cache-Control", "no-store")
	for _, l := range LinkHeaders(iceServers) {
		h.Add("Link", l)
	}
	w.WriteHeader(http.StatusCreated)
	_, _ = w.Write([]byte(answer))
}
