package rtc_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/pion/webrtc/v4"

	"github.com/backchannel/backchannel/internal/rtc"
)

func TestSessionRoutes(t *testing.T) {
	var created, ended, rejected []string
	routes := rtc.SessionRoutes{
		Prefix: "/whip/", Kind: "WHIP",
		Create: func(w http.ResponseWriter, r *http.Request, stream string) {
			created = append(created, stream)
			w.Header().Set("X-Extra", "kept")
			rtc.WriteCreated(w, "/whip/"+stream+"/s1", `"e1"`, []webrtc.ICEServer{{URLs: []string{"stun:stun.example.org"}}}, "v=0\r\n")
		},
		End: func(stream, id string) bool {
			ended = append(ended, stream+"/"+id)
			return id == "s1"
		},
		Reject: func(w http.ResponseWriter, reason string, status int, detail string) {
			rejected = append(rejected, reason)
			w.WriteHeader(status)
		},
	}
	for _, c := range []struct {
		method, path string
		status       int
		allow        string
	}{
		{"POST", "/whip/live", 201, ""},
		{"POST", "/live", 201, ""}, // mounted with StripPrefix
		{"OPTIONS", "/whip/live", 204, rtc.EndpointMethods},
		{"GET", "/whip/live", 405, rtc.EndpointMethods},
		{"POST", "/whip/bad%20name", 400, ""},
		{"DELETE", "/whip/live/s1", 200, ""},
		{"DELETE", "/whip/live/nope", 404, ""},
		{"OPTIONS", "/whip/live/s1", 204, rtc.SessionMethods},
		{"PATCH", "/whip/live/s1", 405, rtc.SessionMethods},
		{"POST", "/whip/", 404, ""},
		{"POST", "/whip/a/b/c", 404, ""},
	} {
		req := httptest.NewRequest(c.method, c.path, strings.NewReader(""))
		rec := httptest.NewRecorder()
		routes.ServeHTTP(rec, req)
		res := rec.Result()
		if res.StatusCode != c.status || res.Header.Get("Allow") != c.allow {
			t.Errorf("%s %s: %d Allow %q, want %d %q", c.method, c.path, res.StatusCode, res.Header.Get("Allow"), c.status, c.allow)
		}
		if res.Header.Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("%s %s: no CORS headers", c.method, c.path)
		}
		if c.status == 201 {
			h := res.Header
			if h.Get("Location") != "/whip/live/s1" || h.Get("ETag") != `"e1"` || h.Get("Content-Type") != rtc.ContentTypeSDP ||
				h.Get("X-Extra") != "kept" || !strings.Contains(h.Get("Link"), `<stun:stun.example.org>; rel="ice-server"`) || rec.Body.String() != "v=0\r\n" {
				t.Errorf("201 answer: %v %q", h, rec.Body.String())
			}
		}
		if c.status == 404 && !strings.HasPrefix(res.Header.Get("Content-Type"), "application/problem+json") {
			t.Errorf("%s %s: 404 is not problem+json", c.method, c.path)
		}
	}
	if strings.Join(created, ",") != "live,live" || strings.Join(ended, ",") != "live/s1,live/nope" || strings.Join(rejected, ",") != "bad_stream" {
		t.Errorf("created %v, ended %v, rejected %v", created, ended, rejected)
	}
}
