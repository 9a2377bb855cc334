package edge_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/backchannel/backchannel/edge"
	"github.com/backchannel/backchannel/internal/whipclient"
	"github.com/backchannel/backchannel/internal/whipclient/whiptest"
)

// A full edge sends a new viewer to a sibling with room (307, which a
// client follows with the same POST and body), or answers 503 with
// Retry-After when there is none; relays from other edges are never
// turned away; a viewer leaving makes room again.
func TestFullEdgeRedirectsOrRefuses(t *testing.T) {
	srv := whiptest.Start(t, whiptest.Options{})
	publish(t, srv, "s")
	sibling := ""
	full, err := edge.New(edge.Config{ID: "full", Registry: srv.Registry, RTC: srv.RTC, MaxViewers: 1, Logger: whiptest.Logger(),
		Siblings: func(stream string) (string, bool) { return sibling, sibling != "" && stream == "s" }})
	if err != nil {
		t.Fatal(err)
	}
	defer full.Close()
	mux := http.NewServeMux()
	mux.Handle("/whep/", full.Handler())
	hs := httptest.NewServer(mux)
	defer hs.Close()

	first := play(t, &whiptest.Server{URL: hs.URL}, "s")
	offer := whiptest.Offer(t)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	req, _ := http.NewRequest(http.MethodPost, hs.URL+"/whep/s", stringsReader(offer))
	req.Header.Set("Content-Type", "application/sdp")
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("full edge without a sibling: %d", resp.StatusCode)
	}
	if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || secs < 1 {
		t.Fatalf("Retry-After %q", resp.Header.Get("Retry-After"))
	}

	// A relay still gets in.
	relayed, err := whipclient.Play(ctxFor(t, 10*time.Second), hs.URL+"/whep/s", whipclient.WithRelayCodecs(), whipclient.WithHeader(edge.RelayHeader, "e2"))
	if err != nil {
		t.Fatalf("relay turned away: %v", err)
	}
	defer relayed.Close()

	sibling = srv.URL
	req, _ = http.NewRequest(http.MethodPost, hs.URL+"/whep/s", stringsReader(offer))
	req.Header.Set("Content-Type", "application/sdp")
	resp, err = noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTemporaryRedirect || resp.Header.Get("Location") != srv.URL+"/whep/s" {
		t.Fatalf("full edge with a sibling: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	// A WHEP client follows it and plays from the sibling.
	p, err := whipclient.Play(ctxFor(t, 10*time.Second), hs.URL+"/whep/s")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.ResourceURL()[:len(srv.URL)] != srv.URL {
		t.Fatalf("session at %s, want the sibling %s", p.ResourceURL(), srv.URL)
	}
	if n := metricValue(t, srv.EdgeMetrics, "backchannel_whep_viewers"); n != 1 {
		t.Fatalf("sibling has %v viewers", n)
	}

	_ = first.Close()
	waitFor(t, "room on the full edge", 5*time.Second, func() bool { return full.Viewers() == 1 }) // the relay stays
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	again, err := whipclient.Play(ctx, hs.URL+"/whep/s")
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if again.ResourceURL()[:len(hs.URL)] != hs.URL {
		t.Fatalf("session at %s after a viewer left, want this edge", again.ResourceURL())
	}
}

func stringsReader(s string) *strings.Reader { return strings.NewReader(s) }
