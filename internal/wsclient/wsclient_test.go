package wsclient_test

import (
	"bufio"
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/backchannel/backchannel/internal/wsclient"
)

// Frames built here are read by coder/websocket, and its frames are read
// here: both directions agree with an independent implementation.
func TestEchoThroughCoderWebsocket(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("User-Agent") != "wsclient-test" {
			http.Error(w, "no user agent", http.StatusBadRequest)
			return
		}
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		c.SetReadLimit(1 << 20)
		for {
			typ, msg, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, msg); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	nc, br, err := wsclient.Dial(context.Background(), "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", nil, "User-Agent: wsclient-test\r\n", 1024)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for _, size := range []int{0, 5, 125, 126, 65535, 65536, 200_000} {
		payload := bytes.Repeat([]byte("ab"), size/2+1)[:size]
		if _, err := nc.Write(wsclient.AppendFrame(nil, wsclient.OpText, [4]byte{1, 2, 3, 4}, payload)); err != nil {
			t.Fatal(err)
		}
		op, got, err := wsclient.ReadFrame(br, nil)
		if err != nil {
			t.Fatalf("%d bytes: %v", size, err)
		}
		if op != wsclient.OpText || !bytes.Equal(got, payload) {
			t.Fatalf("%d bytes: echo op %x, %d bytes back", size, op, len(got))
		}
	}
}

func TestDialRefused(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	if _, _, err := wsclient.Dial(context.Background(), "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", nil, "", 1024); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("Dial to a non-WebSocket route: %v", err)
	}
}

func TestReadFrameRefusesOversize(t *testing.T) {
	hdr := []byte{0x81, 127, 0, 0, 0, 0, 0x10, 0, 0, 0}
	if _, _, err := wsclient.ReadFrame(bufio.NewReader(bytes.NewReader(hdr)), nil); err == nil {
		t.Fatal("a 256 MiB frame header was accepted")
	}
}
