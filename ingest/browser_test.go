package ingest_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/whipclient"
	"github.com/backchannel/backchannel/internal/whipclient/whiptest"
)

type outboundStats struct {
	Video struct {
		FramesEncoded  float64 `json:"framesEncoded"`
		BytesSent      float64 `json:"bytesSent"`
		TargetBitrate  float64 `json:"targetBitrate"`
		NackCount      float64 `json:"nackCount"`
		PliCount       float64 `json:"pliCount"`
		EncoderImpl    string  `json:"encoderImplementation"`
		QualityLimited string  `json:"qualityLimitationReason"`
	} `json:"video"`
	Audio struct {
		PacketsSent float64 `json:"packetsSent"`
	} `json:"audio"`
}

// A real browser publishes its camera and microphone over WHIP (from a page
// on another origin); a WHEP viewer gets its video from a keyframe on and
// its audio, and the browser's bitrate ramps up on our TWCC feedback.
func TestChromiumPublishesOverWHIP(t *testing.T) {
	srv := whiptest.Start(t, whiptest.Options{})
	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write([]byte(whiptest.PlayerPage))
	}))
	defer page.Close()
	browser := whiptest.Chrome(t)
	if err := chromedp.Do(browser, chromedp.Navigate(page.URL)); err != nil {
		t.Fatal(err)
	}
	state, err := chromedp.Run(browser, chromedp.Evaluate[string](
		fmt.Sprintf("publish(%q, %q)", srv.WHIP("cam"), whiptest.Key), chromedp.EvalAwaitPromise))
	if err != nil || state != "publishing" {
		t.Fatalf("publish: %q %v", state, err)
	}
	srv.WaitLive(t, "cam")
	st, _ := srv.Registry.Lookup("cam")
	info := st.Info()
	if len(info.Tracks) != 2 || info.Protocol != "whip" {
		t.Fatalf("stream info %+v", info)
	}
	t.Logf("browser publishes %s + %s (%s)", info.Tracks[0].Codec, info.Tracks[1].Codec, info.Tracks[0].Fmtp)

	var video, audio whiptest.Collector
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	player, err := whipclient.Play(ctx, srv.WHEP("cam"), whipclient.OnRTP(func(tr *webrtc.TrackRemote, p *rtp.Packet) {
		if tr.Kind() == webrtc.RTPCodecTypeVideo {
			video.Add(p)
		} else {
			audio.Add(p)
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer player.Close()
	time.Sleep(4 * time.Second)

	pkts := video.Ordered()
	if len(pkts) < 30 || audio.Len() < 100 {
		t.Fatalf("viewer got %d video and %d audio packets from the browser", len(pkts), audio.Len())
	}
	// The viewer starts at a keyframe: for H.264 the first access unit
	// carries SPS, PPS and an IDR slice.
	codec := st.Info().Tracks[0].Codec
	switch codec {
	case media.MimeH264:
		frames, err := video.H264Frames()
		if err != nil || len(frames) == 0 {
			t.Fatalf("reassembling browser H.264: %v", err)
		}
		types := map[byte]bool{}
		for _, nal := range bytes.Split(frames[0], []byte{0, 0, 0, 1}) {
			if len(nal) > 0 {
				types[nal[0]&0x1f] = true
			}
		}
		if !types[7] || !types[8] || !types[5] {
			t.Fatalf("viewer's first access unit has NAL types %v, want SPS, PPS and IDR", types)
		}
	default:
		if !media.IsKeyframe(codec, pkts[0].Payload) {
			t.Fatalf("viewer's first %s packet is not a keyframe", codec)
		}
	}
	frames := 0
	for _, p := range pkts {
		if p.Marker {
			frames++
		}
	}
	if frames < 30 {
		t.Fatalf("viewer got %d browser frames in 4 s", frames)
	}

	// A viewer joining while the edge holds the stream's last keyframe
	// starts from that GOP cache and asks for no keyframe; then the viewer
	// asks for one itself (PLI), which must reach the browser the same way.
	if metricValue(t, srv.EdgeMetrics, "backchannel_whep_fast_starts_total") > 0 {
		if !player.RequestKeyframe(webrtc.RTPCodecTypeVideo) {
			t.Fatal("the viewer could not send a PLI")
		}
	}
	var out outboundStats
	for deadline := time.Now().Add(5 * time.Second); ; {
		out, err = chromedp.Run(browser, chromedp.Evaluate[outboundStats]("outbound()", chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatal(err)
		}
		if out.Video.PliCount >= 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("browser: %v frames encoded by %s, %.0f kbit/s target, %v NACKs, %v PLIs, limited by %q",
		out.Video.FramesEncoded, out.Video.EncoderImpl, out.Video.TargetBitrate/1000, out.Video.NackCount, out.Video.PliCount, out.Video.QualityLimited)
	t.Logf("ingest sent %v PLIs, edge asked for %v keyframes, %v fast starts", metricValue(t, srv.IngestMetrics, "backchannel_whip_keyframe_requests_total"),
		metricValue(t, srv.EdgeMetrics, "backchannel_whep_keyframe_requests_total"), metricValue(t, srv.EdgeMetrics, "backchannel_whep_fast_starts_total"))
	if out.Video.PliCount < 1 {
		t.Fatal("the viewer's keyframe request never reached the browser")
	}
	// Without transport feedback the browser's estimate stays at its start
	// (300 kbit/s); with it, it climbs. A loaded machine delays packets,
	// which the delay-based estimator answers by holding back, so the
	// climb may take a while.
	for deadline := time.Now().Add(10 * time.Second); out.Video.TargetBitrate < 400_000; {
		if time.Now().After(deadline) {
			t.Fatalf("browser target bitrate %.0f kbit/s after 10 s more: congestion control feedback is not working", out.Video.TargetBitrate/1000)
		}
		time.Sleep(250 * time.Millisecond)
		if out, err = chromedp.Run(browser, chromedp.Evaluate[outboundStats]("outbound()", chromedp.EvalAwaitPromise)); err != nil {
			t.Fatal(err)
		}
	}
}
