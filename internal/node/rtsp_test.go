package node

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func startTestNode(t *testing.T, dataDir string) *Node {
	t.Helper()
	n, err := Start(context.Background(), Config{
		HTTPAddr:    "127.0.0.1:0",
		ICEAddr:     "127.0.0.1:0",
		DataDir:     dataDir,
		PublishKey:  "dev-master",
		OperatorKey: "op-key",
		NodeID:      "rtsp-test",
		Logger:      slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
	})
	return n
}

func api(t *testing.T, n *Node, method, path, bearer, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, n.URL()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// TestStreamKeysAndPullsThroughTheAPI: a key created through the API
// publishes over RTSP (ffmpeg), the stream shows up with its tracks, a
// pull configured through the API copies it, and revoking the key ends
// the publisher's session. Keys and pulls survive a restart.
func TestStreamKeysAndPullsThroughTheAPI(t *testing.T) {
	dataDir := t.TempDir()
	n := startTestNode(t, dataDir)
	if !strings.HasPrefix(n.RTSPBase(), "rtsp://127.0.0.1:") || n.RTSPAddr().Port == 8554 {
		t.Fatalf("a test node's RTSP listener: %s", n.RTSPBase())
	}

	if status, _ := api(t, n, "POST", "/api/v1/streams/cup/keys", "", ""); status != http.StatusUnauthorized {
		t.Fatalf("POST without the operator key: %d", status)
	}
	if status, _ := api(t, n, "POST", "/api/v1/streams/bad%20name/keys", "op-key", ""); status != http.StatusBadRequest {
		t.Fatalf("POST for a bad stream name: %d", status)
	}
	if status, _ := api(t, n, "PUT", "/api/v1/streams/cup/keys", "op-key", ""); status != http.StatusMethodNotAllowed {
		t.Fatalf("PUT: %d", status)
	}
	status, body := api(t, n, "POST", "/api/v1/streams/cup/keys", "op-key", "")
	if status != http.StatusCreated {
		t.Fatalf("POST key: %d %s", status, body)
	}
	var created struct {
		ID, Stream, Key, Usage string
	}
	if err := json.Unmarshal(body, &created); err != nil || created.ID == "" || created.Key == "" || created.Stream != "cup" {
		t.Fatalf("created %s (%v)", body, err)
	}
	_, body2 := api(t, n, "POST", "/api/v1/streams/cup/keys", "op-key", "")
	var second struct{ ID string }
	_ = json.Unmarshal(body2, &second)

	status, body = api(t, n, "GET", "/api/v1/streams/cup/keys", "op-key", "")
	if status != http.StatusOK || bytes.Contains(body, []byte(created.Key)) || !bytes.Contains(body, []byte(created.ID)) {
		t.Fatalf("GET keys: %d %s", status, body)
	}

	// ffmpeg publishes with the new key.
	rtspURL := n.RTSPBase() + "/cup"
	ff := exec.Command("ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error",
		"-re", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25", "-f", "lavfi", "-i", "sine=sample_rate=48000", "-t", "30",
		"-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-c:a", "libopus",
		"-f", "rtsp", "-rtsp_transport", "tcp", rtspURL+"?key="+created.Key)
	var ffErr bytes.Buffer
	ff.Stderr = &ffErr
	if err := ff.Start(); err != nil {
		t.Fatal(err)
	}
	ffDone := make(chan error, 1)
	go func() { ffDone <- ff.Wait() }()
	t.Cleanup(func() { _ = ff.Process.Kill(); <-ffDone })

	type streamView struct {
		Name, Protocol string
		Tracks         []struct {
			Kind, Codec   string
			Width, Height int
			FPS           float64
			SampleRate    int `json:"sample_rate"`
		}
	}
	var live streamView
	waitUntil(t, 10*time.Second, "the stream in GET /api/v1/streams", func() bool {
		_, b := api(t, n, "GET", "/api/v1/streams", "op-key", "")
		var out struct{ Streams []streamView }
		_ = json.Unmarshal(b, &out)
		for _, s := range out.Streams {
			if s.Name == "cup" {
				live = s
				return true
			}
		}
		return false
	})
	if live.Protocol != "rtsp" || len(live.Tracks) != 2 || live.Tracks[0].Width != 640 || live.Tracks[0].Height != 360 ||
		live.Tracks[0].FPS != 25 || live.Tracks[1].SampleRate != 48000 {
		t.Fatalf("listed stream %+v", live)
	}

	// A pull through the API copies the stream from this node's own RTSP
	// server.
	status, body = api(t, n, "POST", "/api/v1/pulls", "op-key", `{"stream":"cup-copy","url":"`+rtspURL+`"}`)
	if status != http.StatusCreated {
		t.Fatalf("POST pull: %d %s", status, body)
	}
	if status, _ := api(t, n, "POST", "/api/v1/pulls", "op-key", `{"stream":"cup-copy","url":"`+rtspURL+`"}`); status != http.StatusConflict {
		t.Fatalf("second POST pull: %d", status)
	}
	if status, _ := api(t, n, "POST", "/api/v1/pulls", "op-key", `{"stream":"x","url":"http://nope"}`); status != http.StatusBadRequest {
		t.Fatalf("POST pull with an http URL: %d", status)
	}
	if status, _ := api(t, n, "POST", "/api/v1/pulls", "op-key", `{"stream":"x","url":"rtsp://h/x","extra":1}`); status != http.StatusBadRequest {
		t.Fatalf("POST pull with an unknown field: %d", status)
	}
	waitUntil(t, 10*time.Second, "the pull to go live", func() bool {
		_, b := api(t, n, "GET", "/api/v1/pulls/cup-copy", "op-key", "")
		return bytes.Contains(b, []byte(`"state": "live"`))
	})

	// Revoking the key ends the publisher's session.
	if status, _ := api(t, n, "DELETE", "/api/v1/streams/cup/keys/"+created.ID, "op-key", ""); status != http.StatusNoContent {
		t.Fatalf("DELETE key: %d", status)
	}
	select {
	case <-ffDone:
		ffDone <- nil // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("revoking the key did not end the RTSP session")
	}
	waitUntil(t, 5*time.Second, "cup off air", func() bool {
		st, ok := n.Registry().Lookup("cup")
		return !ok || !st.Live()
	})
	if status, _ := api(t, n, "DELETE", "/api/v1/streams/cup/keys/"+created.ID, "op-key", ""); status != http.StatusNotFound {
		t.Fatalf("second DELETE: %d", status)
	}
	if status, _ := api(t, n, "DELETE", "/api/v1/streams/cup/keys/master", "op-key", ""); status != http.StatusBadRequest {
		t.Fatalf("DELETE master: %d", status)
	}

	// Keys and pulls are durable.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dataDir + "/" + PullsFile); err != nil {
		t.Fatal(err)
	}
	n2 := startTestNode(t, dataDir)
	_, body = api(t, n2, "GET", "/api/v1/streams/cup/keys", "op-key", "")
	if !bytes.Contains(body, []byte(second.ID)) || bytes.Contains(body, []byte(created.ID)) {
		t.Fatalf("keys after a restart: %s", body)
	}
	_, body = api(t, n2, "GET", "/api/v1/pulls", "op-key", "")
	if !bytes.Contains(body, []byte("cup-copy")) {
		t.Fatalf("pulls after a restart: %s", body)
	}
	if status, _ := api(t, n2, "DELETE", "/api/v1/pulls/cup-copy", "op-key", ""); status != http.StatusNoContent {
		t.Fatalf("DELETE pull: %d", status)
	}
	if status, _ := api(t, n2, "GET", "/api/v1/pulls/cup-copy", "op-key", ""); status != http.StatusNotFound {
		t.Fatalf("GET a deleted pull: %d", status)
	}
}

// A broadcaster key manages the stream keys of its own streams only, and
// pulls (which make the node dial anywhere) are for operators.
func TestStreamKeyAndPullRoutesCheckScope(t *testing.T) {
	n := startTestNode(t, t.TempDir())
	code, body := api(t, n, "POST", "/api/v1/keys", "op-key", `{"role":"broadcaster","streams":["cup"]}`)
	if code != http.StatusCreated {
		t.Fatalf("creating a broadcaster key: %d %s", code, body)
	}
	var created struct {
		Key string `json:"token"`
	}
	if err := json.Unmarshal(body, &created); err != nil || created.Key == "" {
		t.Fatalf("created key %s: %v", body, err)
	}
	for _, c := range []struct {
		method, path, body string
		want               int
	}{
		{"POST", "/api/v1/streams/cup/keys", "", http.StatusCreated},
		{"GET", "/api/v1/streams/cup/keys", "", http.StatusOK},
		{"POST", "/api/v1/streams/other/keys", "", http.StatusForbidden},
		{"GET", "/api/v1/streams/other/keys", "", http.StatusForbidden},
		{"DELETE", "/api/v1/streams/other/keys/k1", "", http.StatusForbidden},
		{"GET", "/api/v1/pulls", "", http.StatusForbidden},
		{"POST", "/api/v1/pulls", `{"stream":"cup","url":"rtsp://127.0.0.1:1/x"}`, http.StatusForbidden},
	} {
		if code, body := api(t, n, c.method, c.path, created.Key, c.body); code != c.want {
			t.Errorf("%s %s with a broadcaster key: %d, want %d (%s)", c.method, c.path, code, c.want, body)
		}
	}
}
