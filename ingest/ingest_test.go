package ingest_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/backchannel/backchannel/ingest"
	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/rtc"
	"github.com/backchannel/backchannel/internal/whipclient"
	"github.com/backchannel/backchannel/internal/whipclient/whiptest"
)

func do(t *testing.T, method, target string, body string, hdr map[string]string) (*http.Response, string) {
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

func postOffer(t *testing.T, target, key, sdp string) (*http.Response, string) {
	hdr := map[string]string{"Content-Type": "application/sdp"}
	if key != "" {
		hdr["Authorization"] = "Bearer " + key
	}
	return do(t, http.MethodPost, target, sdp, hdr)
}

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

func TestMasterKey(t *testing.T) {
	k := ingest.MasterKey("s3cret")
	if !k.CheckPublishKey("any", "s3cret") || !k.CheckPublishKey("other", "s3cret") {
		t.Fatal("master key refused")
	}
	if k.CheckPublishKey("any", "s3cre") || k.CheckPublishKey("any", "") {
		t.Fatal("wrong key accepted")
	}
	if ingest.MasterKey("").CheckPublishKey("any", "") {
		t.Fatal("empty master key accepted something")
	}
}

func TestNewValidatesConfig(t *testing.T) {
	tr, err := rtc.Listen(rtc.Config{ICEAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	reg := media.NewRegistry("n")
	for name, cfg := range map[string]ingest.Config{
		"no registry": {RTC: tr, Keys: ingest.MasterKey("k")},
		"no rtc":      {Registry: reg, Keys: ingest.MasterKey("k")},
		"no keys":     {Registry: reg, RTC: tr},
	} {
		if _, err := ingest.New(cfg); err == nil {
			t.Errorf("%s: New accepted", name)
		}
	}
	shared := prometheus.NewRegistry()
	if _, err := ingest.New(ingest.Config{Registry: reg, RTC: tr, Keys: ingest.MasterKey("k"), Metrics: shared}); err != nil {
		t.Fatal(err)
	}
	if _, err := ingest.New(ingest.Config{Registry: reg, RTC: tr, Keys: ingest.MasterKey("k"), Metrics: shared}); err == nil {
		t.Fatal("second server on one metrics registry should fail to register")
	}
}

func TestWHIPPublishAndDelete(t *testing.T) {
	srv := whiptest.Start(t, whiptest.Options{})
	offer := whiptest.Offer(t, whipclient.H264, whipclient.Opus)
	resp, body := postOffer(t, srv.WHIP("studio-1"), whiptest.Key, offer)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("status = %d: %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/sdp" {
		t.Fatalf("Content-Type = %q", ct)
	}
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, "/whip/studio-1/") || len(loc) < len("/whip/studio-1/")+32 {
		t.Fatalf("Location = %q, want a relative path with an unguessable id", loc)
	}
	if etag := resp.Header.Get("ETag"); len(etag) < 10 || etag[0] != '"' {
		t.Fatalf("ETag = %q", etag)
	}
	if len(resp.Header.Values("Link")) != 0 {
		t.Fatal("Link header without configured ICE servers")
	}
	if !strings.Contains(body, "a=candidate:") || !strings.Contains(body, "a=recvonly") ||
		!strings.Contains(body, "H264") || !strings.Contains(body, "opus") || strings.Contains(body, "VP8") {
		t.Fatalf("answer lacks candidates or has the wrong codecs:\n%s", body)
	}
	if !strings.Contains(body, "a=rtcp-fb:96 nack pli") || !strings.Contains(body, "transport-cc") {
		t.Fatalf("answer lacks feedback:\n%s", body)
	}
	if srv.Ingest.Sessions() != 1 {
		t.Fatalf("Sessions = %d", srv.Ingest.Sessions())
	}

	// DELETE on another stream's path or an unknown id: 404.
	id := loc[strings.LastIndex(loc, "/")+1:]
	resp, body = do(t, http.MethodDelete, srv.URL+"/whip/other/"+id, "", nil)
	wantProblem(t, resp, body, http.StatusNotFound)
	resp, body = do(t, http.MethodDelete, srv.URL+"/whip/studio-1/0123456789abcdef", "", nil)
	wantProblem(t, resp, body, http.StatusNotFound)

	resp, _ = do(t, http.MethodDelete, srv.URL+loc, "", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE status = %d", resp.StatusCode)
	}
	if srv.Ingest.Sessions() != 0 {
		t.Fatal("session kept after DELETE")
	}
	resp, body = do(t, http.MethodDelete, srv.URL+loc, "", nil)
	wantProblem(t, resp, body, http.StatusNotFound)
}

func TestWHIPAbsoluteLocationAndLinkHeaders(t *testing.T) {
	srv := whiptest.Start(t, whiptest.Options{PublicURL: true, ICEServers: []webrtc.ICEServer{
		{URLs: []string{"stun:stun.example.net:3478"}},
		{URLs: []string{"turn:turn.example.net:3478?transport=udp", "turns:turn.example.net:5349"}, Username: "user", Credential: `pa"ss`},
	}})
	resp, body := postOffer(t, srv.WHIP("s"), whiptest.Key, whiptest.Offer(t, whipclient.Opus))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("status = %d: %s", resp.StatusCode, body)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || !loc.IsAbs() || !strings.HasPrefix(loc.String(), srv.URL+"/whip/s/") {
		t.Fatalf("Location = %q, want absolute under %s", resp.Header.Get("Location"), srv.URL)
	}
	links := resp.Header.Values("Link")
	want := []string{
		`<stun:stun.example.net:3478>; rel="ice-server"`,
		`<turn:turn.example.net:3478?transport=udp>; rel="ice-server"; username="user"; credential="pa\"ss"; credential-type="password"`,
		`<turns:turn.example.net:5349>; rel="ice-server"; username="user"; credential="pa\"ss"; credential-type="password"`,
	}
	if strings.Join(links, "\n") != strings.Join(want, "\n") {
		t.Fatalf("Link headers:\n%s\nwant:\n%s", strings.Join(links, "\n"), strings.Join(want, "\n"))
	}
}

func TestWHIPRejections(t *testing.T) {
	srv := whiptest.Start(t, whiptest.Options{})
	good := whiptest.Offer(t, whipclient.H264, whipclient.Opus)

	// 401 without or with a wrong key, with a Bearer challenge.
	for _, key := range []string{"", "wrong"} {
		resp, body := postOffer(t, srv.WHIP("s"), key, good)
		wantProblem(t, resp, body, http.StatusUnauthorized)
		if !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
			t.Fatalf("WWW-Authenticate = %q", resp.Header.Get("WWW-Authenticate"))
		}
	}
	resp, body := do(t, http.MethodPost, srv.WHIP("s"), good, map[string]string{"Content-Type": "application/sdp", "Authorization": "Basic " + whiptest.Key})
	wantProblem(t, resp, body, http.StatusUnauthorized)

	auth := map[string]string{"Authorization": "Bearer " + whiptest.Key}
	// 415 for anything but application/sdp.
	auth["Content-Type"] = "application/json"
	resp, body = do(t, http.MethodPost, srv.WHIP("s"), good, auth)
	wantProblem(t, resp, body, http.StatusUnsupportedMediaType)
	delete(auth, "Content-Type")
	resp, body = do(t, http.MethodPost, srv.WHIP("s"), good, auth)
	wantProblem(t, resp, body, http.StatusUnsupportedMediaType)

	// 413 for oversized bodies, declared or not.
	huge := good + strings.Repeat("a=x-padding:0123456789\r\n", rtc.MaxSDPBytes/20)
	resp, body = postOffer(t, srv.WHIP("s"), whiptest.Key, huge)
	wantProblem(t, resp, body, http.StatusRequestEntityTooLarge)
	req, _ := http.NewRequest(http.MethodPost, srv.WHIP("s"), io.MultiReader(strings.NewReader(huge)))
	req.ContentLength = -1 // chunked: the limit is found while reading
	req.Header.Set("Content-Type", "application/sdp")
	req.Header.Set("Authorization", "Bearer "+whiptest.Key)
	chunked, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(chunked.Body)
	chunked.Body.Close()
	wantProblem(t, chunked, string(b), http.StatusRequestEntityTooLarge)

	// 400: bad stream names, unparsable SDP, no usable media.
	for _, name := range []string{"bad%20name", strings.Repeat("x", 65), "a:b"} {
		resp, body = postOffer(t, srv.URL+"/whip/"+name, whiptest.Key, good)
		wantProblem(t, resp, body, http.StatusBadRequest)
	}
	vp9 := webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP9, ClockRate: 90000, SDPFmtpLine: "profile-id=0"}
	h264mode0 := webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000, SDPFmtpLine: "profile-level-id=42e01f"}
	for name, offer := range map[string]string{
		"garbage":        "hello, I am not SDP",
		"empty":          "\r\n",
		"no media":       "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n",
		"recvonly offer": whiptest.Offer(t),
		"VP9 only":       whiptest.Offer(t, vp9),
		"H264 mode 0":    whiptest.Offer(t, h264mode0),
		"two videos":     whiptest.Offer(t, whipclient.H264, whipclient.VP8),
		"no fingerprint": strings.ReplaceAll(good, "a=fingerprint:", "a=x-fingerprint:"),
	} {
		resp, body = postOffer(t, srv.WHIP("s"), whiptest.Key, offer)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: status %d (%s), want 400", name, resp.StatusCode, body)
			continue
		}
		wantProblem(t, resp, body, http.StatusBadRequest)
	}

	// 405 for other methods on the endpoint and on session resources
	// (PATCH: no trickle ICE or ICE restart).
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodDelete, http.MethodPatch} {
		resp, body = do(t, m, srv.WHIP("s"), "", nil)
		wantProblem(t, resp, body, http.StatusMethodNotAllowed)
		if resp.Header.Get("Allow") != "POST, OPTIONS" {
			t.Fatalf("Allow = %q", resp.Header.Get("Allow"))
		}
	}
	resp, body = do(t, http.MethodPatch, srv.URL+"/whip/s/abc", "a=candidate:1 1 udp 1 1.2.3.4 5 typ host", map[string]string{"Content-Type": "application/trickle-ice-sdpfrag"})
	wantProblem(t, resp, body, http.StatusMethodNotAllowed)
	resp, body = do(t, http.MethodGet, srv.URL+"/whip/", "", nil)
	wantProblem(t, resp, body, http.StatusNotFound)
	resp, body = do(t, http.MethodGet, srv.URL+"/whip/a/b/c", "", nil)
	wantProblem(t, resp, body, http.StatusNotFound)

	if srv.Ingest.Sessions() != 0 {
		t.Fatal("a rejected request left a session behind")
	}
	if n := labeledValue(t, srv.IngestMetrics, "backchannel_whip_rejections_total", "auth"); n != 3 {
		t.Fatalf("auth rejections metric = %v, want 3", n)
	}
}

// labeledValue reads the counter with the given label value.
func labeledValue(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetValue() == label {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

func TestWHIPPreflight(t *testing.T) {
	srv := whiptest.Start(t, whiptest.Options{})
	for _, target := range []string{srv.WHIP("s"), srv.URL + "/whip/s/someid"} {
		resp, _ := do(t, http.MethodOptions, target, "", map[string]string{
			"Origin": "https://studio.example", "Access-Control-Request-Method": "POST",
			"Access-Control-Request-Headers": "authorization, content-type"})
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("OPTIONS status = %d", resp.StatusCode)
		}
		h := resp.Header
		if h.Get("Access-Control-Allow-Origin") != "*" ||
			!strings.Contains(h.Get("Access-Control-Allow-Headers"), "Authorization") ||
			!strings.Contains(h.Get("Access-Control-Allow-Headers"), "Content-Type") ||
			!strings.Contains(h.Get("Access-Control-Allow-Headers"), "If-Match") {
			t.Fatalf("preflight headers: %v", h)
		}
		for _, e := range []string{"Location", "ETag", "Link"} {
			if !strings.Contains(h.Get("Access-Control-Expose-Headers"), e) {
				t.Fatalf("%s not exposed: %q", e, h.Get("Access-Control-Expose-Headers"))
			}
		}
	}
	resp, _ := do(t, http.MethodOptions, srv.WHIP("s"), "", nil)
	if m := resp.Header.Get("Access-Control-Allow-Methods"); !strings.Contains(m, "POST") {
		t.Fatalf("endpoint methods %q", m)
	}
	resp, _ = do(t, http.MethodOptions, srv.URL+"/whip/s/id", "", nil)
	if m := resp.Header.Get("Access-Control-Allow-Methods"); !strings.Contains(m, "DELETE") {
		t.Fatalf("resource methods %q", m)
	}
	// Actual responses expose the headers too.
	resp, _ = postOffer(t, srv.WHIP("s"), whiptest.Key, whiptest.Offer(t, whipclient.Opus))
	if resp.StatusCode != http.StatusCreated || !strings.Contains(resp.Header.Get("Access-Control-Expose-Headers"), "Location") {
		t.Fatalf("201 without exposed headers: %v", resp.Header)
	}
}

func TestWHIPTakeoverReplacesSession(t *testing.T) {
	srv := whiptest.Start(t, whiptest.Options{})
	var mu sync.Mutex
	var events []media.Event
	srv.Registry.Subscribe(func(e media.Event) {
		mu.Lock()
		events = append(events, e)
		mu.Unlock()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	first, err := whipclient.Publish(ctx, srv.WHIP("s"), whiptest.Key, whipclient.WithoutVideo())
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	srv.WaitLive(t, "s")
	second, err := whipclient.Publish(ctx, srv.WHIP("s"), whiptest.Key, whipclient.WithoutVideo())
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	select {
	case <-first.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("replaced publisher's connection not closed")
	}
	deadline := time.Now().Add(5 * time.Second)
	for srv.Ingest.Sessions() != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if srv.Ingest.Sessions() != 1 {
		t.Fatalf("Sessions = %d after takeover", srv.Ingest.Sessions())
	}
	st, _ := srv.Registry.Lookup("s")
	if !st.Live() {
		t.Fatal("stream offline after takeover")
	}
	if metricValue(t, srv.IngestMetrics, "backchannel_whip_takeovers_total") != 1 ||
		metricValue(t, srv.IngestMetrics, "backchannel_whip_publishes_total") != 2 ||
		metricValue(t, srv.IngestMetrics, "backchannel_whip_sessions") != 1 {
		t.Fatal("takeover metrics wrong")
	}
	mu.Lock()
	for _, e := range events {
		if !e.Live {
			t.Fatalf("takeover produced an offline event: %+v", events)
		}
	}
	mu.Unlock()

	// The first publisher's late DELETE does not end the new session.
	_ = first.Close()
	if !st.Live() {
		t.Fatal("replaced publisher's DELETE took the stream offline")
	}
	if err := second.Close(); err != nil {
		t.Fatal(err)
	}
	if st.Live() {
		t.Fatal("stream live after its publisher left")
	}
}

func TestWHIPConnectionLossEndsSession(t *testing.T) {
	srv := whiptest.Start(t, whiptest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pub, err := whipclient.Publish(ctx, srv.WHIP("s"), whiptest.Key, whipclient.WithoutVideo())
	if err != nil {
		t.Fatal(err)
	}
	srv.WaitLive(t, "s")
	// Close the peer connection without DELETE: the server sees the DTLS
	// close and takes the stream off air.
	_ = pub.PeerConnection().Close()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if st, ok := srv.Registry.Lookup("s"); (!ok || !st.Live()) && srv.Ingest.Sessions() == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("session survived the loss of its connection")
}

func TestWHIPClientReportsHTTPErrors(t *testing.T) {
	srv := whiptest.Start(t, whiptest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := whipclient.Publish(ctx, srv.WHIP("s"), "wrong-key")
	var he *whipclient.HTTPError
	if !errors.As(err, &he) || he.StatusCode != http.StatusUnauthorized || he.Detail == "" {
		t.Fatalf("Publish with a wrong key: %v", err)
	}
	if srv.Ingest.Sessions() != 0 {
		t.Fatal("session left behind")
	}
}

func TestWHIPServerCloseEndsSessions(t *testing.T) {
	srv := whiptest.Start(t, whiptest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pub, err := whipclient.Publish(ctx, srv.WHIP("s"), whiptest.Key, whipclient.WithoutVideo())
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	srv.WaitLive(t, "s")
	if err := srv.Ingest.Close(); err != nil {
		t.Fatal(err)
	}
	if srv.Ingest.Sessions() != 0 {
		t.Fatal("sessions left after Close")
	}
	st, _ := srv.Registry.Lookup("s")
	if st.Live() {
		t.Fatal("stream live after the ingest closed")
	}
	resp, body := postOffer(t, srv.WHIP("s"), whiptest.Key, whiptest.Offer(t, whipclient.Opus))
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("POST after Close = %d %s", resp.StatusCode, body)
	}
}
