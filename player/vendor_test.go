package player

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestHLSPlayerAssets: the LL-HLS fallback module is served, and so is
// hls.js when the build embedded it (`make web`, which `make test` runs).
func TestHLSPlayerAssets(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()
	for _, c := range []struct{ path, contains string }{
		{"/static/js/hls-player.js", "export class HLSFallback"},
		{"/static/js/watch.js", "hls-player.js"},
		{"/static/vendor/hls.min.js", "Hls"},
	} {
		res, err := http.Get(srv.URL + c.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			if strings.HasPrefix(c.path, "/static/vendor/") {
				t.Fatalf("%s: %d: this build has no hls.js; run `make web` (make test does) before go test", c.path, res.StatusCode)
			}
			t.Fatalf("%s: %d", c.path, res.StatusCode)
		}
		if !strings.Contains(res.Header.Get("Content-Type"), "javascript") || !strings.Contains(string(body), c.contains) {
			t.Errorf("%s: %q, body lacks %q", c.path, res.Header.Get("Content-Type"), c.contains)
		}
	}
}
