package rtc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/backchannel/backchannel/internal/problem"
)

// HTTP signalling helpers shared by the WHIP (ingest) and WHEP (edge)
// servers, which follow the same resource model: POST an SDP offer to an
// endpoint, get 201 with the answer and a session URL to DELETE.

// MaxSDPBytes bounds an offer body. Browsers' offers are under 10 KiB.
const MaxSDPBytes = 64 << 10

// ContentTypeSDP is the media type of offers and answers.
const ContentTypeSDP = "application/sdp"

// CORS: WHIP/WHEP clients are often pages on other origins.
const (
	corsAllowHeaders  = "Authorization, Content-Type, If-Match"
	corsExposeHeaders = "Location, ETag, Link, Accept-Patch, Retry-After"
)

// SetCORS adds the CORS headers every WHIP/WHEP response carries.
func SetCORS(h http.Header) {
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Expose-Headers", corsExposeHeaders)
}

// WritePreflight answers an OPTIONS request (a CORS preflight or a plain
// capability query) for a resource allowing methods.
func WritePreflight(w http.ResponseWriter, methods string) {
	h := w.Header()
	SetCORS(h)
	h.Set("Allow", methods)
	h.Set("Access-Control-Allow-Methods", methods)
	h.Set("Access-Control-Allow-Headers", corsAllowHeaders)
	h.Set("Access-Control-Max-Age", "86400")
	w.WriteHeader(http.StatusNoContent)
}

// WriteMethodNotAllowed answers 405 with the Allow header.
func WriteMethodNotAllowed(w http.ResponseWriter, methods string) {
	w.Header().Set("Allow", methods)
	problem.Write(w, http.StatusMethodNotAllowed, "allowed methods: "+methods)
}

// ReadSDP reads an application/sdp request body. On failure it has already
// answered: 415 for another content type, 413 over MaxSDPBytes, 400 for an
// unreadable or empty body.
func ReadSDP(w http.ResponseWriter, r *http.Request) (string, bool) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || !strings.EqualFold(mt, ContentTypeSDP) {
		problem.Write(w, http.StatusUnsupportedMediaType, "the body must be an SDP offer with Content-Type: application/sdp")
		return "", false
	}
	if r.ContentLength > MaxSDPBytes {
		problem.Write(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("SDP offers are limited to %d bytes", MaxSDPBytes))
		return "", false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxSDPBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			problem.Write(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("SDP offers are limited to %d bytes", MaxSDPBytes))
		} else {
			problem.Write(w, http.StatusBadRequest, "could not read the request body")
		}
		return "", false
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		problem.Write(w, http.StatusBadRequest, "empty SDP offer")
		return "", false
	}
	return string(body), true
}

// LinkHeaders formats ICE servers as RFC 9725 Link header values, one per
// URL, with TURN credentials as link parameters.
func LinkHeaders(servers []webrtc.ICEServer) []string {
	var out []string
	for _, s := range servers {
		for _, u := range s.URLs {
			v := "<" + u + `>; rel="ice-server"`
			if s.Username != "" {
				v += "; username=" + quote(s.Username)
			}
			if cred, ok := s.Credential.(string); ok && cred != "" {
				v += "; credential=" + quote(cred) + `; credential-type="password"`
			}
			out = append(out, v)
		}
	}
	return out
}

func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// NewToken returns 128 random bits in hex: unguessable session ids and
// entity tags.
func NewToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand never fails on supported platforms
	return hex.EncodeToString(b[:])
}

// ResourceURL joins the public base URL (may be empty: a path is returned)
// and an absolute path whose segments are already escaped.
func ResourceURL(publicURL, path string) string {
	if publicURL == "" {
		return path
	}
	return strings.TrimRight(publicURL, "/") + path
}

// EscapeSegment escapes a path segment for use in ResourceURL.
func EscapeSegment(s string) string { return url.PathEscape(s) }

// GatherTimeout bounds waiting for local ICE candidates. With the shared
// mux, gathering only enumerates interfaces and is near-instant.
const GatherTimeout = 5 * time.Second

// Answer creates the answer to an offer already set as remote description,
// waits for every local candidate (WHIP/WHEP answers are not trickled) and
// returns the complete answer SDP.
func Answer(ctx context.Context, pc *webrtc.PeerConnection) (string, error) {
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		return "", err
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(answer); err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, GatherTimeout)
	defer cancel()
	select {
	case <-gathered:
	case <-ctx.Done():
		return "", fmt.Errorf("gathering ICE candidates: %w", ctx.Err())
	}
	ld := pc.LocalDescription()
	if ld == nil {
		return "", errors.New("no local description")
	}
	return ld.SDP, nil
}
