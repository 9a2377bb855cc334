package application

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/backchannel/backchannel/internal/bus"
	"github.com/backchannel/backchannel/internal/keys"
)

// memPulls keeps pulls in memory, enough to check the routes' HTTP
// mapping; the real puller is tested in ingest/rtsp and through the whole
// node in internal/node.
type memPulls struct {
	mu sync.Mutex
	m  map[string]PullView
}

func (p *memPulls) AddPull(s PullSpec) (PullView, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !strings.HasPrefix(s.URL, "rtsp://") {
		return PullView{}, errors.New("url must be an rtsp:// URL")
	}
	if _, ok := p.m[s.Stream]; ok {
		return PullView{}, ErrPullExists
	}
	v := PullView{PullSpec: s, State: "connecting"}
	p.m[s.Stream] = v
	return v, nil
}

func (p *memPulls) RemovePull(stream string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.m[stream]; !ok {
		return ErrNoSuchPull
	}
	delete(p.m, stream)
	return nil
}

func (p *memPulls) Pull(stream string) (PullView, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v, ok := p.m[stream]
	return v, ok
}

func (p *memPulls) ListPulls() []PullView {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []PullView
	for _, v := range p.m {
		out = append(out, v)
	}
	return out
}

func keyRoutesServer(t *testing.T) (*httptest.Server, *keys.Keys) {
	t.Helper()
	s, err := New(Config{Bus: bus.NewMemory(), Edges: StaticEdge{ID: "e"}, OperatorKey: "op"})
	if err != nil {
		t.Fatal(err)
	}
	store, err := keys.OpenFile(filepath.Join(t.TempDir(), keys.FileName))
	if err != nil {
		t.Fatal(err)
	}
	k := keys.New(store, "", nil)
	mux := http.NewServeMux()
	s.Routes(mux)
	s.StreamKeyRoutes(mux, k, &memPulls{m: map[string]PullView{}})
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	return hs, k
}

func call(t *testing.T, hs *httptest.Server, method, path, auth, ctype, body string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, hs.URL+path, strings.NewReader(body))
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestStreamKeyRoutes(t *testing.T) {
	hs, k := keyRoutesServer(t)
	check := func(method, path, auth string, want int) string {
		t.Helper()
		resp, body := call(t, hs, method, path, auth, "", "")
		if resp.StatusCode != want {
			t.Fatalf("%s %s: %d %s, want %d", method, path, resp.StatusCode, body, want)
		}
		if want >= 400 && resp.Header.Get("Content-Type") != "application/problem+json" {
			t.Fatalf("%s %s: error without problem details", method, path)
		}
		return body
	}
	check("POST", "/api/v1/streams/cup/keys", "", 401)
	check("POST", "/api/v1/streams/cup/keys", "wrong", 401)
	check("POST", "/api/v1/streams/c%20p/keys", "op", 400)
	check("PATCH", "/api/v1/streams/cup/keys", "op", 405)
	body := check("POST", "/api/v1/streams/cup/keys", "op", 201)
	var created CreatedKey
	if err := json.Unmarshal([]byte(body), &created); err != nil || created.Secret == "" || created.ID == "" || created.Usage == "" {
		t.Fatalf("created %s", body)
	}
	if !k.CheckPublishKey("cup", created.Secret) {
		t.Fatal("the created key does not publish")
	}
	body = check("GET", "/api/v1/streams/cup/keys", "op", 200)
	if strings.Contains(body, created.Secret) || !strings.Contains(body, created.ID) {
		t.Fatalf("listing %s", body)
	}
	check("DELETE", "/api/v1/streams/cup/keys/nope", "op", 404)
	check("DELETE", "/api/v1/streams/cup/keys/master", "op", 400)
	check("GET", "/api/v1/streams/cup/keys/"+created.ID, "op", 405)
	check("DELETE", "/api/v1/streams/cup/keys/"+created.ID, "op", 204)
	if k.CheckPublishKey("cup", created.Secret) {
		t.Fatal("revoked key still publishes")
	}
	// The application's own routes are untouched.
	check("GET", "/api/v1/streams", "op", 200)
	check("GET", "/api/v1/nothing", "op", 404)
}

func TestPullRoutes(t *testing.T) {
	hs, _ := keyRoutesServer(t)
	post := func(ctype, body string, want int) {
		t.Helper()
		resp, out := call(t, hs, "POST", "/api/v1/pulls", "op", ctype, body)
		if resp.StatusCode != want {
			t.Fatalf("POST %s: %d %s, want %d", body, resp.StatusCode, out, want)
		}
	}
	post("application/json", `{"stream":"cam","url":"rtsp://10.0.0.5/live","on_demand":true}`, 201)
	post("application/json", `{"stream":"cam","url":"rtsp://10.0.0.5/live"}`, 409)
	post("application/json", `{"stream":"bad name","url":"rtsp://h/x"}`, 400)
	post("application/json", `{"stream":"x","url":"http://h/x"}`, 400)
	post("application/json", `{"stream":"x","url":"rtsp://h/x","bogus":1}`, 400)
	post("application/json", `{"stream":"x"} {"stream":"y"}`, 400)
	post("text/plain", `{"stream":"x","url":"rtsp://h/x"}`, 415)
	post("application/json", `{"stream":"x","url":"rtsp://h/`+strings.Repeat("a", 70000)+`"}`, 413)

	resp, body := call(t, hs, "GET", "/api/v1/pulls", "op", "", "")
	if resp.StatusCode != 200 || !strings.Contains(body, `"on_demand": true`) {
		t.Fatalf("GET pulls: %d %s", resp.StatusCode, body)
	}
	if resp, _ := call(t, hs, "GET", "/api/v1/pulls/cam", "op", "", ""); resp.StatusCode != 200 {
		t.Fatalf("GET pull: %d", resp.StatusCode)
	}
	if resp, _ := call(t, hs, "DELETE", "/api/v1/pulls/cam", "", "", ""); resp.StatusCode != 401 {
		t.Fatalf("DELETE without the key: %d", resp.StatusCode)
	}
	if resp, _ := call(t, hs, "DELETE", "/api/v1/pulls/cam", "op", "", ""); resp.StatusCode != 204 {
		t.Fatalf("DELETE pull: %d", resp.StatusCode)
	}
	if resp, _ := call(t, hs, "DELETE", "/api/v1/pulls/cam", "op", "", ""); resp.StatusCode != 404 {
		t.Fatalf("second DELETE: %d", resp.StatusCode)
	}
	if resp, _ := call(t, hs, "GET", "/api/v1/pulls/cam", "op", "", ""); resp.StatusCode != 404 {
		t.Fatalf("GET deleted: %d", resp.StatusCode)
	}
}
