// Package whiptest runs a real WHIP ingest and WHEP edge on loopback, on
// OS-chosen ports, for tests of the media path and its clients.
package whiptest

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/backchannel/backchannel/edge"
	"github.com/backchannel/backchannel/ingest"
	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/rtc"
)

// Key is the publish key the test server accepts.
const Key = "test-publish-key"

// Options tune the server.
type Options struct {
	ICEAddr      string // default "127.0.0.1:0"
	ICEServers   []webrtc.ICEServer
	PublicURL    bool          // hand out absolute URLs based on the test server's
	OfflineGrace time.Duration // 0: the registry default; negative: none
	PionSRTP     bool          // the edge sends through pion's SRTP session (edge.Config.PionSRTP)
}

// Server is a running ingest + edge pair on one HTTP listener and one ICE port.
type Server struct {
	URL           string
	RTC           *rtc.Transport
	Registry      *media.Registry
	Ingest        *ingest.Server
	Edge          *edge.Server
	HTTP          *httptest.Server
	IngestMetrics *prometheus.Registry
	EdgeMetrics   *prometheus.Registry
}

// Logger logs to stderr when BACKCHANNEL_TEST_LOG is set (to a slog level
// name such as "debug"), and nowhere otherwise.
func Logger() *slog.Logger {
	lvl := os.Getenv("BACKCHANNEL_TEST_LOG")
	if lvl == "" {
		return slog.New(slog.DiscardHandler)
	}
	var l slog.Level
	_ = l.UnmarshalText([]byte(lvl))
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}

// Start runs a server until the test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	logger := Logger()
	iceAddr := opts.ICEAddr
	if iceAddr == "" {
		iceAddr = "127.0.0.1:0"
	}
	tr, err := rtc.Listen(rtc.Config{ICEAddr: iceAddr, ICEServers: opts.ICEServers, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	reg := media.NewRegistry("test-ingest")
	if opts.OfflineGrace != 0 {
		reg.SetOfflineGrace(opts.OfflineGrace)
	}
	s := &Server{RTC: tr, Registry: reg, IngestMetrics: prometheus.NewRegistry(), EdgeMetrics: prometheus.NewRegistry()}
	mux := http.NewServeMux()
	s.HTTP = httptest.NewUnstartedServer(mux)
	s.HTTP.Start()
	s.URL = s.HTTP.URL
	public := ""
	if opts.PublicURL {
		public = s.URL
	}
	s.Ingest, err = ingest.New(ingest.Config{Node: "test-ingest", Registry: reg, RTC: tr, Keys: ingest.MasterKey(Key),
		PublicURL: public, Logger: logger, Metrics: s.IngestMetrics})
	if err != nil {
		t.Fatal(err)
	}
	s.Edge, err = edge.New(edge.Config{ID: "test-edge", Registry: reg, RTC: tr, PublicURL: public, Logger: logger, Metrics: s.EdgeMetrics,
		PionSRTP: opts.PionSRTP})
	if err != nil {
		t.Fatal(err)
	}
	mux.Handle("/whip/", s.Ingest.Handler())
	mux.Handle("/whep/", s.Edge.Handler())
	t.Cleanup(func() {
		s.HTTP.Close()
		_ = s.Edge.Close()
		_ = s.Ingest.Close()
		reg.Close()
		_ = tr.Close()
	})
	return s
}

// WHIP is the publish endpoint of a stream.
func (s *Server) WHIP(stream string) string { return s.URL + "/whip/" + stream }

// WHEP is the play endpoint of a stream.
func (s *Server) WHEP(stream string) string { return s.URL + "/whep/" + stream }

// WaitSinks waits until the stream's track of the given kind feeds n sinks.
func (s *Server) WaitSinks(t testing.TB, stream string, kind media.Kind, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if st, ok := s.Registry.Lookup(stream); ok {
			if tr, ok := st.Track(kind); ok && tr.SinkCount() == n {
				return
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("stream %s %s track never reached %d sinks", stream, kind, n)
}

// WaitLive waits until the stream is on air.
func (s *Server) WaitLive(t testing.TB, stream string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if st, ok := s.Registry.Lookup(stream); ok && st.Live() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("stream %s never went live", stream)
}

// Offer builds a complete SDP offer from a pion peer connection that is
// then closed: sendonly tracks of the given codecs for WHIP, recvonly
// transceivers (all of pion's default codecs, like a browser) for WHEP.
func Offer(t testing.TB, sendCodecs ...webrtc.RTPCodecCapability) string {
	t.Helper()
	me := &webrtc.MediaEngine{}
	if len(sendCodecs) == 0 {
		if err := me.RegisterDefaultCodecs(); err != nil {
			t.Fatal(err)
		}
	} else {
		for i, c := range sendCodecs {
			typ := webrtc.RTPCodecTypeVideo
			if strings.HasPrefix(strings.ToLower(c.MimeType), "audio/") {
				typ = webrtc.RTPCodecTypeAudio
			}
			if err := me.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: c, PayloadType: webrtc.PayloadType(96 + i)}, typ); err != nil {
				t.Fatal(err)
			}
		}
	}
	pc, err := webrtc.NewAPI(webrtc.WithMediaEngine(me)).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if len(sendCodecs) == 0 {
		for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
			if _, err := pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
				t.Fatal(err)
			}
		}
	} else {
		for i, c := range sendCodecs {
			tr, err := webrtc.NewTrackLocalStaticSample(c, fmt.Sprintf("t%d", i), "s")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := pc.AddTransceiverFromTrack(tr, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
				t.Fatal(err)
			}
		}
	}
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	done := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	<-done
	return pc.LocalDescription().SDP
}
