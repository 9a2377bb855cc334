package application

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/backchannel/backchannel/internal/keys"
	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/problem"
)

// StreamKeys is what the stream key routes need: internal/keys.Keys. Its
// revocations end the sessions published with the key (the ingest tier
// subscribes to them).
type StreamKeys interface {
	Create(ctx context.Context, stream string) (keys.Created, error)
	List(ctx context.Context, stream string) ([]keys.Info, error)
	Revoke(ctx context.Context, stream, id string) error
}

// StreamKeyRoutes registers the stream key and RTSP pull routes on mux:
//
//	POST   /api/v1/streams/{name}/keys       create a key; the answer holds the secret, once
//	GET    /api/v1/streams/{name}/keys       list ids, creation and last use, never secrets
//	DELETE /api/v1/streams/{name}/keys/{id}  revoke a key; its live sessions end
//	POST   /api/v1/pulls                     pull a stream from an RTSP URL {stream, url, on_demand}
//	GET    /api/v1/pulls                     list pulls and their state
//	GET    /api/v1/pulls/{stream}            one pull
//	DELETE /api/v1/pulls/{stream}            stop and forget a pull
//
// They take the operator key, like every /api/v1 route. pulls may be nil
// (no pull routes: a node without an RTSP ingest).
func (s *Server) StreamKeyRoutes(mux *http.ServeMux, k StreamKeys, pulls Pulls) {
	mux.Handle("/api/v1/streams/{name}/keys", s.auth(methods{
		http.MethodPost: func(w http.ResponseWriter, r *http.Request) { s.createStreamKey(w, r, k) },
		http.MethodGet:  func(w http.ResponseWriter, r *http.Request) { s.listStreamKeys(w, r, k) },
	}))
	mux.Handle("/api/v1/streams/{name}/keys/{id}", s.auth(methods{
		http.MethodDelete: func(w http.ResponseWriter, r *http.Request) { s.revokeStreamKey(w, r, k) },
	}))
	if pulls != nil {
		s.pullRoutes(mux, pulls)
	}
}

// methods dispatches on the request method and answers 405 with Allow
// for the others.
type methods map[string]http.HandlerFunc

func (m methods) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h, ok := m[r.Method]; ok {
		h(w, r)
		return
	}
	allow := make([]string, 0, len(m))
	for _, name := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete} {
		if _, ok := m[name]; ok {
			allow = append(allow, name)
		}
	}
	w.Header().Set("Allow", strings.Join(allow, ", "))
	problem.Write(w, http.StatusMethodNotAllowed, "this route answers "+strings.Join(allow, ", "))
}

// streamParam reads the {name} of a stream route; the request's key must
// cover that stream (an operator key, or a broadcaster key scoped to it).
func streamParam(w http.ResponseWriter, r *http.Request) (string, bool) {
	name := r.PathValue("name")
	if !media.ValidStreamName(name) {
		problem.Write(w, http.StatusBadRequest, media.StreamNameRule)
		return "", false
	}
	if !mayStream(w, r, name) {
		return "", false
	}
	return name, true
}

// CreatedKey is the answer to POST /api/v1/streams/{name}/keys.
type CreatedKey struct {
	keys.Created
	// Usage says where the key goes, for people reading the answer.
	Usage string `json:"usage"`
}

func (s *Server) createStreamKey(w http.ResponseWriter, r *http.Request, k StreamKeys) {
	stream, ok := streamParam(w, r)
	if !ok {
		return
	}
	c, err := k.Create(r.Context(), stream)
	if err != nil {
		s.log.Warn("creating a stream key failed", "stream", stream, "err", err)
		problem.Write(w, http.StatusInternalServerError, "the key store failed: "+err.Error())
		return
	}
	w.Header().Set("Location", "/api/v1/streams/"+stream+"/keys/"+c.ID)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusCreated)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(CreatedKey{Created: c, Usage: "WHIP: Authorization: Bearer <key>. RTSP: rtsp://host:8554/" + stream +
		"?key=<key>, or the key as the password of RTSP credentials (Digest: the key id as user name). Shown only once."})
}

func (s *Server) listStreamKeys(w http.ResponseWriter, r *http.Request, k StreamKeys) {
	stream, ok := streamParam(w, r)
	if !ok {
		return
	}
	list, err := k.List(r.Context(), stream)
	if err != nil {
		problem.Write(w, http.StatusInternalServerError, "the key store failed: "+err.Error())
		return
	}
	writeJSON(w, map[string]any{"stream": stream, "keys": list})
}

func (s *Server) revokeStreamKey(w http.ResponseWriter, r *http.Request, k StreamKeys) {
	stream, ok := streamParam(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	switch err := k.Revoke(r.Context(), stream, id); {
	case err == nil:
		w.WriteHeader(http.StatusNoContent)
	case errors.Is(err, keys.ErrNotFound):
		problem.Write(w, http.StatusNotFound, "stream "+stream+" has no key "+id)
	case errors.Is(err, keys.ErrMaster):
		problem.Write(w, http.StatusBadRequest, "the master key (--publish-key) cannot be revoked; restart with another")
	default:
		problem.Write(w, http.StatusInternalServerError, "the key store failed: "+err.Error())
	}
}

// maxJSONBody bounds API request bodies.
const maxJSONBody = 64 << 10

// decodeJSON reads a JSON body strictly, answering 400/413/415 itself.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(strings.ToLower(ct), "application/json") {
		problem.Write(w, http.StatusUnsupportedMediaType, "send application/json")
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxJSONBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			problem.Write(w, http.StatusRequestEntityTooLarge, "the body is over 64 KiB")
			return false
		}
		problem.Write(w, http.StatusBadRequest, "invalid JSON body: "+err.Error())
		return false
	}
	if _, err := dec.Token(); err != io.EOF {
		problem.Write(w, http.StatusBadRequest, "invalid JSON body: more than one value")
		return false
	}
	return true
}
