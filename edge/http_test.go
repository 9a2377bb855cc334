package edge_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/backchannel/backchannel/edge"
	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/rtc"
	"github.com/backchannel/backchannel/internal/whipclient"
	"github.com/backchannel/backchannel/internal/whipclient/whiptest"
)

func do(t *testing.T, method, target, body string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, target, r)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

var sdpHeader = map[string]string{"Content-Type": "application/sdp"}

func wantProblem(t *testing.T, resp *http.Response, body string, status int) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status = %d, want %d (body %s)", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type = %q, want problem+json", ct)
	}
	var p struct {
		Status int    `json:"status"`
		Detail string `json:"detail"`
	}
	if err := json.Unmarshal([]byte(body), &p); err != nil || p.Status != status || p.Detail == "" {
		t.Fatalf("problem body %q (err %v)", body, err)
	}
	if resp.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatal("error response without CORS header")
	}
}

func TestNewValidatesConfig(t *testing.T) {
	tr, err := rtc.Listen(rtc.Config{ICEAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if _, err := edge.New(edge.Config{RTC: tr}); err == nil {
		t.Fatal("New without registry accepted")
	}
	if _, err := edge.New(edge.Config{Registry: media.NewRegistry("n")}); err == nil {
		t.Fatal("New without transport accepted")
	}
	reg := prometheus.NewRegistry()
	if _, err := edge.New(edge.Config{Registry: media.NewRegistry("n"), RTC: tr, Metrics: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := edge.New(edge.Config{Registry: media.NewRegistry("n"), RTC: tr, Metrics: reg}); err == nil {
		t.Fatal("second server on one metrics registry should fail to register")
	}
}

func TestWHEPNotLiveIs409WithRetryAfter(t *testing.T) {
	srv := whiptest.Start(t, whiptest.Options{OfflineGrace: -1})
	offer := whiptest.Offer(t)
	resp, body := do(t, http.MethodPost, srv.WHEP("nobody"), offer, sdpHeader)
	wantProblem(t, resp, body, http.StatusConflict)
	if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || secs < 1 {
		t.Fatalf("Retry-After = %q", resp.Header.Get("Retry-After"))
	}
	// A stream whose publisher left is not live either.
	pub := publish(t, srv, "gone", whipclient.WithoutVideo())
	_ = pub.Close()
	resp, body = do(t, http.MethodPost, srv.WHEP("gone"), offer, sdpHeader)
	wantProblem(t, resp, body, http.StatusConflict)
}

func TestWHEPPlayAndDelete(t *testing.T) {
	srv := whiptest.Start(t, whiptest.Options{})
	publish(t, srv, "show")
	resp, body := do(t, http.MethodPost, srv.WHEP("show"), whiptest.Offer(t), sdpHeader)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("status = %d: %s", resp.StatusCode, body)
	}
	if resp.Header.Get("Content-Type") != "application/sdp" {
		t.Fatalf("Content-Type = %q", resp.Header.Get("Content-Type"))
	}
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, "/whep/show/") || len(loc) < len("/whep/show/")+32 {
		t.Fatalf("Location = %q", loc)
	}
	if etag := resp.Header.Get("ETag"); len(etag) < 10 || etag[0] != '"' {
		t.Fatalf("ETag = %q", etag)
	}
	// The answer sends exactly the stream's codecs, with our feedback.
	if !strings.Contains(body, "a=sendonly") || !strings.Contains(body, "a=candidate:") {
		t.Fatalf("answer:\n%s", body)
	}
	for _, unwanted := range []string{"VP8", "VP9", "AV1", "G722", "PCMU"} {
		if strings.Contains(body, unwanted) {
			t.Fatalf("answer offers %s:\n%s", unwanted, body)
		}
	}
	if strings.Count(body, "a=rtpmap:") != 2 || !strings.Contains(body, "H264/90000") || !strings.Contains(body, "opus/48000/2") {
		t.Fatalf("answer should carry one H264 and one Opus payload type:\n%s", body)
	}
	for _, fb := range []string{" nack\r\n", " nack pli\r\n", " ccm fir\r\n"} {
		if !strings.Contains(body, fb) {
			t.Fatalf("answer lacks feedback%q:\n%s", fb, body)
		}
	}
	if srv.Edge.Viewers() != 1 {
		t.Fatalf("Viewers = %d", srv.Edge.Viewers())
	}
	id := loc[strings.LastIndex(loc, "/")+1:]
	resp, body = do(t, http.MethodDelete, srv.URL+"/whep/other/"+id, "", nil)
	wantProblem(t, resp, body, http.StatusNotFound)
	resp, _ = do(t, http.MethodDelete, srv.URL+loc, "", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE = %d", resp.StatusCode)
	}
	if srv.Edge.Viewers() != 0 {
		t.Fatal("viewer kept after DELETE")
	}
	resp, body = do(t, http.MethodDelete, srv.URL+loc, "", nil)
	wantProblem(t, resp, body, http.StatusNotFound)
}

func TestWHEPAbsoluteLocationAndLinks(t *testing.T) {
	srv := whiptest.Start(t, whiptest.Options{PublicURL: true, ICEServers: []webrtc.ICEServer{
		{URLs: []string{"turn:turn.example.net:3478"}, Username: "u", Credential: "c"},
	}})
	publish(t, srv, "s", whipclient.WithoutVideo())
	resp, body := do(t, http.MethodPost, srv.WHEP("s"), whiptest.Offer(t), sdpHeader)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("status = %d: %s", resp.StatusCode, body)
	}
	if u, err := url.Parse(resp.Header.Get("Location")); err != nil || !u.IsAbs() || !strings.HasPrefix(u.String(), srv.URL+"/whep/s/") {
		t.Fatalf("Location = %q", resp.Header.Get("Location"))
	}
	links := resp.Header.Values("Link")
	if len(links) != 1 || links[0] != `<turn:turn.example.net:3478>; rel="ice-server"; username="u"; credential="c"; credential-type="password"` {
		t.Fatalf("Link = %q", links)
	}
}

func TestWHEPRejections(t *testing.T) {
	srv := whiptest.Start(t, whiptest.Options{})
	publish(t, srv, "s")
	good := whiptest.Offer(t)

	resp, body := do(t, http.MethodPost, srv.WHEP("s"), good, map[string]string{"Content-Type": "text/plain"})
	wantProblem(t, resp, body, http.StatusUnsupportedMediaType)
	resp, body = do(t, http.MethodPost, srv.WHEP("s"), good, nil)
	wantProblem(t, resp, body, http.StatusUnsupportedMediaType)

	huge := good + strings.Repeat("a=x-padding:0123456789\r\n", rtc.MaxSDPBytes/20)
	resp, body = do(t, http.MethodPost, srv.WHEP("s"), huge, sdpHeader)
	wantProblem(t, resp, body, http.StatusRequestEntityTooLarge)

	resp, body = do(t, http.MethodPost, srv.URL+"/whep/"+strings.Repeat("n", 65), good, sdpHeader)
	wantProblem(t, resp, body, http.StatusBadRequest)

	vp9Only := whiptest.Offer(t, webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP9, ClockRate: 90000})
	// That offer sends; turn it into a receive-only one.
	vp9Only = strings.ReplaceAll(vp9Only, "a=sendonly", "a=recvonly")
	for name, offer := range map[string]string{
		"garbage":         "v=0 what",
		"sendonly offer":  whiptest.Offer(t, whipclient.H264, whipclient.Opus),
		"no common codec": vp9Only,
		"no fingerprint":  strings.ReplaceAll(good, "a=fingerprint:", "a=x-fingerprint:"),
	} {
		resp, body = do(t, http.MethodPost, srv.WHEP("s"), offer, sdpHeader)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: status %d (%s), want 400", name, resp.StatusCode, body)
			continue
		}
		wantProblem(t, resp, body, http.StatusBadRequest)
	}
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		resp, body = do(t, m, srv.WHEP("s"), "", nil)
		wantProblem(t, resp, body, http.StatusMethodNotAllowed)
		if resp.Header.Get("Allow") != "POST, OPTIONS" {
			t.Fatalf("Allow = %q", resp.Header.Get("Allow"))
		}
	}
	resp, body = do(t, http.MethodPatch, srv.URL+"/whep/s/abc", "a=end-of-candidates", map[string]string{"Content-Type": "application/trickle-ice-sdpfrag"})
	wantProblem(t, resp, body, http.StatusMethodNotAllowed)
	resp, body = do(t, http.MethodPost, srv.URL+"/whep/", good, sdpHeader)
	wantProblem(t, resp, body, http.StatusNotFound)
	if srv.Edge.Viewers() != 0 {
		t.Fatal("rejected requests left viewers behind")
	}
}

func TestWHEPPreflight(t *testing.T) {
	srv := whiptest.Start(t, whiptest.Options{})
	for target, method := range map[string]string{srv.WHEP("s"): "POST", srv.URL + "/whep/s/id": "DELETE"} {
		resp, _ := do(t, http.MethodOptions, target, "", map[string]string{
			"Origin": "https://player.example", "Access-Control-Request-Method": method})
		h := resp.Header
		if resp.StatusCode != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != "*" ||
			!strings.Contains(h.Get("Access-Control-Allow-Methods"), method) ||
			!strings.Contains(h.Get("Access-Control-Allow-Headers"), "Content-Type") ||
			!strings.Contains(h.Get("Access-Control-Allow-Headers"), "Authorization") ||
			!strings.Contains(h.Get("Access-Control-Allow-Headers"), "If-Match") {
			t.Fatalf("preflight %s: %d %v", target, resp.StatusCode, h)
		}
		for _, e := range []string{"Location", "ETag", "Link", "Retry-After"} {
			if !strings.Contains(h.Get("Access-Control-Expose-Headers"), e) {
				t.Fatalf("%s not exposed", e)
			}
		}
	}
}

// A viewer that only wants audio gets audio only.
func TestWHEPAudioOnlyViewer(t *testing.T) {
	srv := whiptest.Start(t, whiptest.Options{})
	publish(t, srv, "s")
	p := play(t, srv, "s", whipclient.WithoutVideo())
	if _, ok := p.Codec(webrtc.RTPCodecTypeAudio); !ok {
		t.Fatal("no audio negotiated")
	}
	srv.WaitSinks(t, "s", media.KindAudio, 1)
	if st, _ := srv.Registry.Lookup("s"); st != nil {
		if v, _ := st.Track(media.KindVideo); v.SinkCount() != 0 {
			t.Fatal("audio-only viewer attached to video")
		}
	}
}
