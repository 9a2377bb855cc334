package whipclient_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	pionmedia "github.com/pion/webrtc/v4/pkg/media"

	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/whipclient"
	"github.com/backchannel/backchannel/internal/whipclient/whiptest"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// proxy fronts the real server on another URL layout: the endpoint lives at
// /a/b/publish (reached through a 307 from /old) and answers with a
// Location relative to it, so the client must resolve it per RFC 3986.
type proxy struct {
	*httptest.Server
	mu      sync.Mutex
	deletes []string
}

func newProxy(t *testing.T, real *whiptest.Server, location func(realLoc string) string) *proxy {
	p := &proxy{}
	var realLoc string
	mux := http.NewServeMux()
	mux.HandleFunc("/old", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/a/b/publish", http.StatusTemporaryRedirect)
	})
	mux.HandleFunc("/a/b/publish", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		req, _ := http.NewRequest(http.MethodPost, real.WHIP("s"), strings.NewReader(string(body)))
		req.Header = r.Header.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		answer, _ := io.ReadAll(resp.Body)
		realLoc = resp.Header.Get("Location")
		w.Header().Set("Location", location(realLoc))
		w.Header().Set("ETag", resp.Header.Get("ETag"))
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(answer)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodDelete {
			http.NotFound(w, r)
			return
		}
		p.mu.Lock()
		p.deletes = append(p.deletes, r.URL.Path)
		p.mu.Unlock()
		req, _ := http.NewRequest(http.MethodDelete, real.URL+realLoc, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			w.WriteHeader(resp.StatusCode)
		}
	})
	p.Server = httptest.NewServer(mux)
	t.Cleanup(p.Close)
	return p
}

func TestLocationIsResolvedAgainstTheFinalRequestURL(t *testing.T) {
	real := whiptest.Start(t, whiptest.Options{OfflineGrace: -1})
	cases := []struct {
		name     string
		location func(realLoc string) string
		want     func(p *proxy) string
	}{
		{"relative", func(string) string { return "../sessions/42" }, func(p *proxy) string { return p.URL + "/a/sessions/42" }},
		{"path-absolute", func(string) string { return "/x/y" }, func(p *proxy) string { return p.URL + "/x/y" }},
		{"same directory", func(string) string { return "s1?x=1" }, func(p *proxy) string { return p.URL + "/a/b/s1?x=1" }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := newProxy(t, real, c.location)
			pub, err := whipclient.Publish(ctx(t), p.URL+"/old", whiptest.Key, whipclient.WithoutVideo())
			if err != nil {
				t.Fatal(err)
			}
			if got := pub.ResourceURL(); got != c.want(p) {
				t.Fatalf("ResourceURL = %q, want %q", got, c.want(p))
			}
			if pub.ETag() == "" {
				t.Fatal("no ETag kept")
			}
			if err := pub.Close(); err != nil {
				t.Fatal(err)
			}
			p.mu.Lock()
			defer p.mu.Unlock()
			wantPath := strings.TrimPrefix(strings.SplitN(c.want(p), "?", 2)[0], p.URL)
			if len(p.deletes) != 1 || p.deletes[0] != wantPath {
				t.Fatalf("DELETEs = %v, want one to %s", p.deletes, wantPath)
			}
			if st, ok := real.Registry.Lookup("s"); ok && st.Live() {
				t.Fatal("stream still live after Close")
			}
		})
	}
}

func TestPublishAndPlayRoundTrip(t *testing.T) {
	srv := whiptest.Start(t, whiptest.Options{PublicURL: true})
	var kfReqs sync.WaitGroup
	kfReqs.Add(1)
	var once sync.Once
	pub, err := whipclient.Publish(ctx(t), srv.WHIP("rt"), whiptest.Key,
		whipclient.WithVideoCodec(whipclient.VP8),
		whipclient.OnKeyframeRequest(func() { once.Do(kfReqs.Done) }))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if pub.VideoTrack() == nil || pub.AudioTrack() == nil || !strings.HasPrefix(pub.ResourceURL(), srv.URL+"/whip/rt/") {
		t.Fatalf("publisher: video %v audio %v resource %q", pub.VideoTrack(), pub.AudioTrack(), pub.ResourceURL())
	}
	srv.WaitLive(t, "rt")
	got := make(chan webrtc.RTPCodecType, 100)
	player, err := whipclient.Play(ctx(t), srv.WHEP("rt"), whipclient.OnRTP(func(tr *webrtc.TrackRemote, p *rtp.Packet) {
		select {
		case got <- tr.Kind():
		default:
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer player.Close()
	if c, ok := player.Codec(webrtc.RTPCodecTypeVideo); !ok || c.MimeType != webrtc.MimeTypeVP8 {
		t.Fatalf("player video codec %+v", c)
	}
	srv.WaitSinks(t, "rt", media.KindVideo, 1)
	// A delta frame makes the publisher's track known to the server, which
	// then passes on the joining player's keyframe request.
	interframe := []byte{0x10, 0x03, 0x00, 0x00}
	if err := pub.WriteVideo(pionmedia.Sample{Data: interframe, Duration: time.Second / 30}); err != nil {
		t.Fatal(err)
	}
	waited := make(chan struct{})
	go func() { kfReqs.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		t.Fatal("the publisher never got a keyframe request")
	}
	keyframe := []byte{0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01} // VP8 key frame header
	if err := pub.WriteVideo(pionmedia.Sample{Data: keyframe, Duration: time.Second / 30}); err != nil {
		t.Fatal(err)
	}
	if err := pub.WriteAudio(pionmedia.Sample{Data: []byte{0xfc, 0xff, 0xfe}, Duration: 20 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	kinds := map[webrtc.RTPCodecType]bool{}
	timeout := time.After(5 * time.Second)
	for len(kinds) < 2 {
		select {
		case k := <-got:
			kinds[k] = true
		case <-timeout:
			t.Fatalf("player got only %v", kinds)
		}
	}
	if len(player.Tracks()) != 2 {
		t.Fatalf("player tracks %v", player.Tracks())
	}
	if err := player.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-player.Done():
	default:
		t.Fatal("Done not closed after Close")
	}
}

func TestErrors(t *testing.T) {
	srv := whiptest.Start(t, whiptest.Options{})
	_, err := whipclient.Play(ctx(t), srv.WHEP("offline"))
	var he *whipclient.HTTPError
	if !errors.As(err, &he) || he.StatusCode != http.StatusConflict || he.RetryAfter != 5*time.Second || !strings.Contains(he.Detail, "not on air") {
		t.Fatalf("Play offline stream: %#v", err)
	}
	if !strings.Contains(err.Error(), "409") {
		t.Fatalf("error text %q", err)
	}
	if _, err := whipclient.Publish(ctx(t), srv.WHIP("s"), whiptest.Key, whipclient.WithoutAudio(), whipclient.WithoutVideo()); err == nil {
		t.Fatal("publishing nothing accepted")
	}
	if _, err := whipclient.Publish(ctx(t), "http://127.0.0.1:1/whip/s", whiptest.Key); err == nil {
		t.Fatal("unreachable server accepted")
	}
	// A 201 without Location is a protocol error.
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusCreated)
	}))
	defer bad.Close()
	if _, err := whipclient.Play(ctx(t), bad.URL); err == nil || !strings.Contains(err.Error(), "Location") {
		t.Fatalf("201 without Location: %v", err)
	}
	// A cancelled context stops Publish.
	c, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := whipclient.Publish(c, srv.WHIP("s"), whiptest.Key); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Publish: %v", err)
	}
}
