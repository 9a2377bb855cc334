package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"

	"github.com/backchannel/backchannel/internal/wsclient"
)

// wsClient is one light control link: raw frames over a TCP socket, a 1 KB
// read buffer, one goroutine while it reads.
type wsClient struct {
	nc  net.Conn
	br  *bufio.Reader
	wmu sync.Mutex
}

// dialWS opens a WebSocket from source address src (may be nil).
func dialWS(ctx context.Context, wsURL string, src net.IP, ua string) (*wsClient, error) {
	nc, br, err := wsclient.Dial(ctx, wsURL, src, "User-Agent: "+ua+"\r\nAccept-Language: en-US\r\n", 1024)
	if err != nil {
		return nil, err
	}
	return &wsClient{nc: nc, br: br}, nil
}

// writeFrame sends a masked client frame.
func (c *wsClient) writeFrame(op byte, payload []byte) error {
	var mask [4]byte
	_, _ = rand.Read(mask[:])
	b := wsclient.AppendFrame(make([]byte, 0, 14+len(payload)), op, mask, payload)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.nc.Write(b)
	return err
}

func (c *wsClient) sendText(s string) error { return c.writeFrame(wsclient.OpText, []byte(s)) }

var errClosed = errors.New("closed by the server")

// readFrame returns the next data frame's payload, answering pings on the
// way. buf is reused when large enough.
func (c *wsClient) readFrame(buf []byte) ([]byte, error) {
	for {
		op, payload, err := wsclient.ReadFrame(c.br, buf)
		if err != nil {
			return nil, err
		}
		buf = payload
		switch op {
		case wsclient.OpPing:
			if err := c.writeFrame(wsclient.OpPong, payload); err != nil {
				return nil, err
			}
		case wsclient.OpPong:
		case wsclient.OpClose:
			_ = c.writeFrame(wsclient.OpClose, payload)
			return nil, errClosed
		default:
			return payload, nil
		}
	}
}

// expectType reads frames until one of type t arrives.
func (c *wsClient) expectType(t string) ([]byte, error) {
	want := []byte(`{"t":"` + t + `"`)
	for i := 0; i < 8; i++ {
		f, err := c.readFrame(nil)
		if err != nil {
			return nil, err
		}
		if bytes.HasPrefix(f, want) {
			return f, nil
		}
	}
	return nil, fmt.Errorf("no %s frame", t)
}

var tsKey = []byte(`"ts":`)

// noticeTS returns the ts member (unix ms) of a notice frame.
func noticeTS(f []byte) (float64, bool) {
	if !bytes.HasPrefix(f, []byte(`{"t":"notice"`)) {
		return 0, false
	}
	i := bytes.Index(f, tsKey)
	if i < 0 {
		return 0, false
	}
	rest := f[i+len(tsKey):]
	j := bytes.IndexAny(rest, ",}")
	if j < 0 {
		return 0, false
	}
	v, err := strconv.ParseFloat(string(rest[:j]), 64)
	return v, err == nil
}
