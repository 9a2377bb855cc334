package rtsp_test

import (
	"bufio"
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/pion/rtcp"

	"github.com/backchannel/backchannel/ingest/rtsp"
	"github.com/backchannel/backchannel/ingest/rtsp/wire"
	"github.com/backchannel/backchannel/internal/media"
)

// TestClientAnswersDigestChallenge: a server that wants Digest
// credentials gets a response computed from the URL's user and password.
func TestClientAnswersDigestChallenge(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	verified := make(chan bool, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		br := bufio.NewReader(nc)
		for {
			req, err := wire.ReadRequest(br, wire.Limits{})
			if err != nil {
				return
			}
			h := req.Header.Get("Authorization")
			if h == "" {
				resp := wire.NewResponse(req, wire.StatusUnauthorized)
				resp.Header.Add("WWW-Authenticate", `Basic realm="cam"`)
				resp.Header.Add("WWW-Authenticate", `Digest realm="cam", nonce="abc123", qop="auth"`)
				_ = resp.Write(nc)
				continue
			}
			cred, err := wire.ParseAuthorization(h)
			ok := err == nil && cred.Scheme == "digest" && cred.Username == "admin" &&
				cred.VerifyDigest(wire.DigestHA1("admin", "cam", "pa:ss"), req.Method)
			verified <- ok
			status := wire.StatusOK
			if !ok {
				status = wire.StatusUnauthorized
			}
			_ = wire.NewResponse(req, status).Write(nc)
			return
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := rtsp.Dial(ctx, "rtsp://admin:pa%3Ass@"+ln.Addr().String()+"/cam")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.URL().User != nil {
		t.Fatal("the client's URL keeps the credentials")
	}
	if err := c.Options(ctx); err != nil {
		t.Fatal(err)
	}
	if !<-verified {
		t.Fatal("the server could not verify the client's Digest response")
	}
}

func TestClientReportsRefusals(t *testing.T) {
	n := startNode(t, nodeOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := rtsp.Dial(ctx, n.rtspURL("nothing", ""))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Describe(ctx)
	var ce *rtsp.ClientError
	if !errors.As(err, &ce) || ce.Status != 404 || ce.Method != "DESCRIBE" {
		t.Fatalf("DESCRIBE of an offline stream: %v", err)
	}
	if _, err := rtsp.Dial(ctx, "http://"+n.RTSP.Addr().String()+"/x"); err == nil {
		t.Fatal("an http URL dialled")
	}
}

// TestClientKeepaliveAndRTCP: a playing client's keepalives are answered
// (and skipped by ReadFrames), and its RTCP reaches the server.
func TestClientKeepaliveAndRTCP(t *testing.T) {
	n := startNode(t, nodeOptions{})
	pub, err := n.Registry.Publish("k", media.PublisherInfo{}, []media.Codec{{MimeType: media.MimeOpus, ClockRate: 48000, Channels: 2}}, nopSource{})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	w, _ := pub.Track(media.KindAudio)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := rtsp.Dial(ctx, n.rtspURL("k", ""))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	medias, err := c.Describe(ctx)
	if err != nil || len(medias) != 1 || medias[0].Codec.MimeType != media.MimeOpus {
		t.Fatalf("%+v %v", medias, err)
	}
	if err := c.SetupTCP(ctx, medias[0], 4); err != nil {
		t.Fatal(err)
	}
	if err := c.Play(ctx); err != nil {
		t.Fatal(err)
	}
	if got := c.KeepaliveInterval(); got != 30*time.Second {
		t.Fatalf("keepalive interval %v for the server's 60 s timeout", got)
	}
	go func() {
		for i := range 50 {
			_ = w.WriteRTP(opusPacket(i))
			if i == 10 {
				_ = c.Keepalive()
				rr, _ := rtcp.Marshal([]rtcp.Packet{&rtcp.ReceiverReport{SSRC: 1}})
				_ = c.WriteFrame(5, rr)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	got := 0
	err = c.ReadFrames(time.Second, func(ch byte, b []byte) {
		if ch == 4 {
			got++
		}
	})
	if !errors.Is(err, rtsp.ErrNoData) {
		t.Fatalf("ReadFrames ended with %v, want ErrNoData after the source stopped", err)
	}
	if got != 50 {
		t.Fatalf("read %d of 50 packets", got)
	}
	if v := counterValue(t, n.RTSPMetrics, "backchannel_rtsp_requests_total", "GET_PARAMETER"); v != 1 {
		t.Fatalf("GET_PARAMETER requests %v", v)
	}
}
