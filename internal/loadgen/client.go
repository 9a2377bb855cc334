package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"
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
	u, err := url.Parse(wsURL)
	if err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: 10 * time.Second}
	if src != nil {
		d.LocalAddr = &net.TCPAddr{IP: src}
	}
	nc, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, err
	}
	var key [16]byte
	_, _ = rand.Read(key[:])
	req := "GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " +
		base64.StdEncoding.EncodeToString(key[:]) + "\r\nUser-Agent: " + ua + "\r\nAccept-Language: en-US\r\n\r\n"
	_ = nc.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.WriteString(nc, req); err != nil {
		nc.Close()
		return nil, err
	}
	br := bufio.NewReaderSize(nc, 1024)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		nc.Close()
		return nil, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		nc.Close()
		return nil, fmt.Errorf("upgrade answered %s", resp.Status)
	}
	return &wsClient{nc: nc, br: br}, nil
}

// writeFrame sends a masked client frame.
func (c *wsClient) writeFrame(op byte, payload []byte) error {
	var mask [4]byte
	_, _ = rand.Read(mask[:])
	b := make([]byte, 0, 14+len(payload))
	b = append(b, 0x80|op)
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	b = append(b, mask[:]...)
	for i, x := range payload {
		b = append(b, x^mask[i%4])
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.nc.Write(b)
	return err
}

func (c *wsClient) sendText(s string) error { return c.writeFrame(0x1, []byte(s)) }

var errClosed = errors.New("closed by the server")

// readFrame returns the next data frame's payload, answering pings on the
// way. buf is reused when large enough.
func (c *wsClient) readFrame(buf []byte) ([]byte, error) {
	for {
		var h [2]byte
		if _, err := io.ReadFull(c.br, h[:]); err != nil {
			return nil, err
		}
		op := h[0] & 0x0f
		n := int(h[1] & 0x7f)
		switch n {
		case 126:
			var l [2]byte
			if _, err := io.ReadFull(c.br, l[:]); err != nil {
				return nil, err
			}
			n = int(binary.BigEndian.Uint16(l[:]))
		case 127:
			var l [8]byte
			if _, err := io.ReadFull(c.br, l[:]); err != nil {
				return nil, err
			}
			n = int(binary.BigEndian.Uint64(l[:]))
		}
		if n > 1<<20 {
			return nil, fmt.Errorf("frame of %d bytes", n)
		}
		if cap(buf) < n {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(c.br, buf); err != nil {
			return nil, err
		}
		switch op {
		case 0x9: // ping
			if err := c.writeFrame(0xa, buf); err != nil {
				return nil, err
			}
		case 0xa:
		case 0x8:
			_ = c.writeFrame(0x8, buf)
			return nil, errClosed
		default:
			return buf, nil
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
