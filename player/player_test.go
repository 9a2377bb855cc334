package player

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestPagesAndAssets(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()
	cases := []struct {
		path, contains, ctype string
		status                int
	}{
		{"/", "Backchannel", "text/html", 200},
		{"/watch/demo", `src="/static/js/watch.js"`, "text/html", 200},
		{"/studio", `src="/static/js/studio.js"`, "text/html", 200},
		{"/ops", `src="/static/js/ops.js"`, "text/html", 200},
		{"/static/js/watch.js", "ControlLink", "javascript", 200},
		{"/static/js/control.js", "/connect", "javascript", 200},
		{"/static/style.css", ".stage", "text/css", 200},
		{"/static/watch.html", "", "", 404},
		{"/nope", "", "", 404},
	}
	for _, c := range cases {
		res, err := http.Get(srv.URL + c.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != c.status {
			t.Errorf("%s: status %d, want %d", c.path, res.StatusCode, c.status)
			continue
		}
		if c.status != 200 {
			continue
		}
		if !strings.Contains(res.Header.Get("Content-Type"), c.ctype) {
			t.Errorf("%s: content type %q", c.path, res.Header.Get("Content-Type"))
		}
		if !strings.Contains(string(body), c.contains) {
			t.Errorf("%s: body lacks %q", c.path, c.contains)
		}
	}
}
