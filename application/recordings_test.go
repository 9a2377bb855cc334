package application_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/backchannel/backchannel/application"
	"github.com/backchannel/backchannel/internal/bus"
	"github.com/backchannel/backchannel/internal/cmaf/cmaftest"
	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/record"
)

// TestRecordingAPI: an operator starts and stops a stream's recording and
// lists it; the errors are problem details; without a recorder the routes
// answer 501.
func TestRecordingAPI(t *testing.T) {
	reg := media.NewRegistry("test")
	defer reg.Close()
	rec, err := record.New(record.Config{Dir: t.TempDir(), Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()
	mem := bus.NewMemory()
	defer mem.Close()
	app, err := application.New(application.Config{Bus: mem, Edges: application.StaticEdge{ID: "e1"}, OperatorKey: operatorKey, Recorder: rec})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	app.Routes(mux)
	api := httptest.NewServer(mux)
	defer api.Close()

	call := func(method, path, body, key string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, api.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}

	if code, _ := call("POST", "/api/v1/streams/cam/recording", "", "wrong"); code != 401 {
		t.Errorf("wrong key: %d", code)
	}
	if code, body := call("POST", "/api/v1/streams/cam/recording", `{"action":"start"}`, operatorKey); code != 409 {
		t.Errorf("offline stream: %d %s", code, body)
	}
	src := cmaftest.DemoClip(t, 1)
	pub := cmaftest.Publish(t, reg, "cam", src)
	defer pub.Close()
	code, body := call("POST", "/api/v1/streams/cam/recording", "", operatorKey)
	if code != 201 {
		t.Fatalf("start: %d %s", code, body)
	}
	var started record.Recording
	if err := json.Unmarshal([]byte(body), &started); err != nil || started.Stream != "cam" || started.State != "recording" {
		t.Fatalf("start answered %s (%v)", body, err)
	}
	if code, _ := call("POST", "/api/v1/streams/cam/recording", `{"action":"start"}`, operatorKey); code != 409 {
		t.Errorf("second start: %d", code)
	}
	if code, _ := call("POST", "/api/v1/streams/cam/recording", `{"action":"pause"}`, operatorKey); code != 400 {
		t.Errorf("bad action: %d", code)
	}
	if code, _ := call("PUT", "/api/v1/streams/cam/recording", "", operatorKey); code != 405 {
		t.Errorf("PUT: %d", code)
	}
	if err := cmaftest.Feed(context.Background(), pub, src, 8); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	code, body = call("POST", "/api/v1/streams/cam/recording", `{"action":"stop"}`, operatorKey)
	var stopped record.Recording
	if code != 200 || json.Unmarshal([]byte(body), &stopped) != nil || stopped.State != "complete" || stopped.Segments == 0 {
		t.Fatalf("stop: %d %s", code, body)
	}
	if code, _ := call("DELETE", "/api/v1/streams/cam/recording", "", operatorKey); code != 404 {
		t.Errorf("stop when not recording: %d", code)
	}
	code, body = call("GET", "/api/v1/recordings", "", operatorKey)
	var listed struct{ Recordings []record.Recording }
	list := &listed.Recordings
	if code != 200 || json.Unmarshal([]byte(body), &listed) != nil || len(*list) != 1 || (*list)[0].ID != started.ID {
		t.Fatalf("list: %d %s", code, body)
	}
	if code, _ := call("GET", "/api/v1/recordings/"+started.ID, "", operatorKey); code != 200 {
		t.Errorf("get: %d", code)
	}
	if code, _ := call("GET", "/api/v1/recordings/nope", "", operatorKey); code != 404 {
		t.Errorf("get unknown: %d", code)
	}

	bare, err := application.New(application.Config{Bus: mem, Edges: application.StaticEdge{ID: "e1"}, OperatorKey: operatorKey})
	if err != nil {
		t.Fatal(err)
	}
	m2 := http.NewServeMux()
	bare.Routes(m2)
	srv2 := httptest.NewServer(m2)
	defer srv2.Close()
	req, _ := http.NewRequest("GET", srv2.URL+"/api/v1/recordings", nil)
	req.Header.Set("Authorization", "Bearer "+operatorKey)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 501 {
		t.Errorf("without a recorder: %d, want 501", res.StatusCode)
	}
}
