package rtsp_test

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/backchannel/backchannel/ingest/rtsp"
	"github.com/backchannel/backchannel/ingest/rtsp/wire"
	"github.com/backchannel/backchannel/internal/whipclient/whiptest"
)

const opusSDP = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nt=0 0\r\nm=audio 0 RTP/AVP 97\r\na=rtpmap:97 opus/48000/2\r\na=control:streamid=0\r\n"

// TestCloseStopsEverything: a publisher, a reader and a pull, then Close:
// no goroutine of the server, its sessions or the puller is left.
func TestCloseStopsEverything(t *testing.T) {
	time.Sleep(100 * time.Millisecond)
	before := runtime.NumGoroutine()
	t.Run("sessions", func(t *testing.T) {
		n := startNode(t, nodeOptions{})
		pubc := dialRaw(t, n)
		wantStatus(t, "ANNOUNCE", pubc.do("ANNOUNCE", n.rtspURL("s", "key="+whiptest.Key), map[string]string{"Content-Type": "application/sdp"}, opusSDP), 200)
		resp := pubc.do("SETUP", n.rtspURL("s", "")+"/streamid=0", map[string]string{"Transport": "RTP/AVP/TCP;unicast;interleaved=0-1;mode=record"}, "")
		wantStatus(t, "SETUP", resp, 200)
		sess, _ := wire.ParseSession(resp.Header.Get("Session"))
		wantStatus(t, "RECORD", pubc.do("RECORD", n.rtspURL("s", ""), map[string]string{"Session": sess.ID}, ""), 200)
		stop := make(chan struct{})
		sent := make(chan struct{})
		go func() {
			defer close(sent)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 97, SequenceNumber: uint16(i), Timestamp: uint32(i * 960), SSRC: 5},
					Payload: []byte{0xfc, 0xff, 0xfe}}
				b, _ := p.Marshal()
				frame := append(wire.AppendFrameHeader(nil, 0, len(b)), b...)
				if _, err := pubc.nc.Write(frame); err != nil {
					return
				}
			}
		}()
		defer func() { close(stop); <-sent }()

		p, err := rtsp.NewPuller(rtsp.PullerConfig{Registry: n.Registry, MinBackoff: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		if _, err := p.Add(rtsp.PullConfig{Stream: "copy", URL: n.rtspURL("s", "")}); err != nil {
			t.Fatal(err)
		}
		n.waitLive(t, "copy", 5*time.Second)

		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := rtsp.Dial(ctx, n.rtspURL("copy", ""))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		medias, err := c.Describe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.SetupTCP(ctx, medias[0], 0); err != nil {
			t.Fatal(err)
		}
		if err := c.Play(ctx); err != nil {
			t.Fatal(err)
		}
		got := 0
		_ = c.ReadFrames(2*time.Second, func(ch byte, b []byte) {
			if got++; got == 10 {
				c.Close()
			}
		})
		if got < 10 {
			t.Fatalf("reader got %d frames through publish → pull → read", got)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		var ours []string
		for _, g := range strings.Split(stacks, "\n\n") {
			if !strings.Contains(g, "testing.") {
				ours = append(ours, g)
			}
		}
		t.Fatalf("%d goroutines before, %d after:\n%s", before, n, strings.Join(ours, "\n\n"))
	}
}
