// Package problem writes HTTP errors as RFC 9457 problem details, the one error
// shape every Backchannel HTTP route uses.
package problem

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// Details is an RFC 9457 problem document. Extension members go in Extra and are
// flattened into the top-level object when encoded.
type Details struct {
	Type     string         `json:"type,omitempty"`
	Title    string         `json:"title"`
	Status   int            `json:"status"`
	Detail   string         `json:"detail,omitempty"`
	Instance string         `json:"instance,omitempty"`
	Extra    map[string]any `json:"-"`
}

// MarshalJSON flattens Extra next to the standard members.
func (d Details) MarshalJSON() ([]byte, error) {
	m := make(map[string]any, 5+len(d.Extra))
	for k, v := range d.Extra {
		m[k] = v
	}
	if d.Type != "" {
		m["type"] = d.Type
	}
	m["title"] = d.Title
	m["status"] = d.Status
	if d.Detail != "" {
		m["detail"] = d.Detail
	}
	if d.Instance != "" {
		m["instance"] = d.Instance
	}
	return json.Marshal(m)
}

// ContentType is the media type of a problem document.
const ContentType = "application/problem+json"

// Write sends a problem document with the given status. The title is the
// standard status text; detail says what exactly was wrong.
func Write(w http.ResponseWriter, status int, detail string) {
	WriteDetails(w, Details{Title: http.StatusText(status), Status: status, Detail: detail})
}

// WriteRetry sends a problem document with a Retry-After header, for 409, 429
// and 503 answers that the client should retry.
func WriteRetry(w http.ResponseWriter, status int, after time.Duration, detail string) {
	secs := int(after.Round(time.Second) / time.Second)
	if secs < 1 {
		secs = 1
	}
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	Write(w, status, detail)
}

// WriteDetails sends d as the response, using d.Status as the HTTP status.
func WriteDetails(w http.ResponseWriter, d Details) {
	if d.Title == "" {
		d.Title = http.StatusText(d.Status)
	}
	body, err := json.Marshal(d)
	if err != nil {
		// Extra held something unencodable; fall back to the bare members.
		d.Extra = nil
		body, _ = json.Marshal(d)
	}
	w.Header().Set("Content-Type", ContentType)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(d.Status)
	_, _ = w.Write(body)
}
