package connection

import (
	"context"
	"errors"
	"net/http"

	"github.com/coder/websocket"
)

// wsConn is the seam between a link and its WebSocket library, so that an
// epoll-based transport (gobwas/ws) can replace coder/websocket later without
// touching link logic. Read must be called from one goroutine; the other
// methods may be called concurrently with it.
type wsConn interface {
	// Read returns the next data frame; binary reports a binary frame.
	Read(ctx context.Context) (binary bool, data []byte, err error)
	Write(ctx context.Context, data []byte) error
	Ping(ctx context.Context) error
	// Close performs the close handshake (bounded by the library's timeout).
	Close(code int, reason string) error
	// CloseNow drops the connection without a handshake.
	CloseNow() error
}

// errFrameTooBig is returned by Read when a frame exceeds the read limit;
// the transport has already closed the connection with 1009.
var errFrameTooBig = errors.New("frame too big")

type coderConn struct{ c *websocket.Conn }

func acceptCoder(w http.ResponseWriter, r *http.Request, readLimit int64) (wsConn, error) {
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		// The origin was checked by the caller against its allow-list.
		InsecureSkipVerify: true,
		CompressionMode:    websocket.CompressionDisabled,
	})
	if err != nil {
		return nil, err
	}
	c.SetReadLimit(readLimit)
	return coderConn{c}, nil
}

func (c coderConn) Read(ctx context.Context) (bool, []byte, error) {
	typ, data, err := c.c.Read(ctx)
	if errors.Is(err, websocket.ErrMessageTooBig) {
		return false, nil, errFrameTooBig
	}
	return typ == websocket.MessageBinary, data, err
}

func (c coderConn) Write(ctx context.Context, data []byte) error {
	return c.c.Write(ctx, websocket.MessageText, data)
}

func (c coderConn) Ping(ctx context.Context) error { return c.c.Ping(ctx) }

func (c coderConn) Close(code int, reason string) error {
	return c.c.Close(websocket.StatusCode(code), reason)
}

func (c coderConn) CloseNow() error { return c.c.CloseNow() }

// peerCloseCode returns the close code the peer sent, or 0.
func peerCloseCode(err error) int {
	if s := websocket.CloseStatus(err); s >= 0 {
		return int(s)
	}
	return 0
}
