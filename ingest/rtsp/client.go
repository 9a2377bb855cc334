package rtsp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/backchannel/backchannel/ingest/rtsp/wire"
	"github.com/backchannel/backchannel/internal/rtc"
)

// ClientError is a request the server refused.
type ClientError struct {
	Method string
	Status int
	Reason string
}

func (e *ClientError) Error() string {
	return fmt.Sprintf("rtsp: %s answered %d %s", e.Method, e.Status, e.Reason)
}

// Client is an RTSP client that plays a stream over TCP-interleaved RTP:
// what pulls a camera into the registry, and what tests read with. Its
// requests are sequential; once playing, ReadFrames reads the media and
// Keepalive may be called from another goroutine.
type Client struct {
	nc   net.Conn
	br   *bufio.Reader
	base *url.URL // the URL without credentials
	user string
	pass string

	wmu  sync.Mutex
	cseq int
	// Authentication learnt from the last 401.
	challenge *wire.Challenge

	session        string
	sessionTimeout time.Duration
	contentBase    string
}

// DefaultClientUserAgent is the User-Agent of the client's requests.
const DefaultClientUserAgent = "backchannel"

// Dial connects to the server of an rtsp:// URL; credentials in the URL
// are used when the server asks for them.
func Dial(ctx context.Context, rawURL string) (*Client, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("rtsp: bad URL: %w", err)
	}
	if !strings.EqualFold(u.Scheme, "rtsp") || u.Host == "" {
		return nil, fmt.Errorf("rtsp: %q is not an rtsp:// URL", redact(u))
	}
	c := &Client{}
	if u.User != nil {
		c.user = u.User.Username()
		c.pass, _ = u.User.Password()
	}
	b := *u
	b.User = nil
	c.base = &b
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "554")
	}
	var d net.Dialer
	c.nc, err = d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, fmt.Errorf("rtsp: %w", err)
	}
	c.br = bufio.NewReaderSize(c.nc, 64<<10)
	return c, nil
}

// redact hides a URL's password for logs and errors.
func redact(u *url.URL) string {
	if u == nil {
		return ""
	}
	return u.Redacted()
}

// URL is the URL played, without credentials.
func (c *Client) URL() *url.URL { return c.base }

// Close ends the session (TEARDOWN, best effort) and the connection.
func (c *Client) Close() error {
	if c.session != "" {
		c.nc.SetWriteDeadline(time.Now().Add(time.Second))
		_ = c.send(wire.MethodTeardown, c.base.String(), nil, nil)
	}
	return c.nc.Close()
}

// send writes a request without waiting for the answer.
func (c *Client) send(method, target string, h wire.Header, body []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.cseq++
	if h == nil {
		h = wire.Header{}
	}
	h.Set("CSeq", strconv.Itoa(c.cseq))
	h.Set("User-Agent", DefaultClientUserAgent)
	if c.session != "" {
		h.Set("Session", c.session)
	}
	if c.challenge != nil {
		h.Set("Authorization", c.challenge.Authorization(method, target, c.user, c.pass, rtc.NewToken()[:16]))
	}
	req := &wire.Request{Method: method, RawURL: target, Header: h, Body: body}
	return req.Write(c.nc)
}

// do sends a request and reads its answer, authenticating once on 401.
func (c *Client) do(ctx context.Context, method, target string, h wire.Header) (*wire.Response, error) {
	if dl, ok := ctx.Deadline(); ok {
		c.nc.SetDeadline(dl)
		defer c.nc.SetDeadline(time.Time{})
	}
	for attempt := 0; ; attempt++ {
		hdr := wire.Header{}
		for k, v := range h {
			hdr[k] = append([]string(nil), v...)
		}
		if err := c.send(method, target, hdr, nil); err != nil {
			return nil, fmt.Errorf("rtsp: %s: %w", method, err)
		}
		resp, err := c.readResponse()
		if err != nil {
			return nil, fmt.Errorf("rtsp: %s: %w", method, err)
		}
		if resp.StatusCode == wire.StatusUnauthorized && attempt == 0 && c.user != "" {
			if ch, ok := pickChallenge(resp.Header.Values("WWW-Authenticate")); ok {
				c.challenge = &ch
				continue
			}
		}
		if resp.StatusCode != wire.StatusOK {
			return resp, &ClientError{Method: method, Status: resp.StatusCode, Reason: resp.Reason}
		}
		return resp, nil
	}
}

// pickChallenge prefers Digest, which does not send the password.
func pickChallenge(values []string) (wire.Challenge, bool) {
	var basic *wire.Challenge
	for _, v := range values {
		ch, err := wire.ParseChallenge(v)
		if err != nil {
			continue
		}
		if ch.Scheme == "digest" {
			return ch, true
		}
		basic = &ch
	}
	if basic != nil {
		return *basic, true
	}
	return wire.Challenge{}, false
}

// readResponse reads the next response, skipping interleaved frames.
func (c *Client) readResponse() (*wire.Response, error) {
	for {
		frame, err := wire.IsFrame(c.br)
		if err != nil {
			return nil, err
		}
		if frame {
			if _, _, err := wire.ReadFrame(c.br, nil); err != nil {
				return nil, err
			}
			continue
		}
		return wire.ReadResponse(c.br, wire.Limits{MaxBodyBytes: 1 << 20})
	}
}

// Options sends OPTIONS.
func (c *Client) Options(ctx context.Context) error {
	_, err := c.do(ctx, wire.MethodOptions, c.base.String(), nil)
	return err
}

// Describe fetches the stream's session description.
func (c *Client) Describe(ctx context.Context) ([]Media, error) {
	resp, err := c.do(ctx, wire.MethodDescribe, c.base.String(), wire.Header{"Accept": {"application/sdp"}})
	if err != nil {
		return nil, err
	}
	c.contentBase = resp.Header.Get("Content-Base")
	if c.contentBase == "" {
		c.contentBase = resp.Header.Get("Content-Location")
	}
	if c.contentBase == "" {
		c.contentBase = c.base.String()
	}
	_, medias, err := parseSDP(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("rtsp: DESCRIBE: %w", err)
	}
	return medias, nil
}

// controlURL resolves a media section's control attribute the way
// servers expect: absolute as it is, relative appended to the base with a
// slash (what ffmpeg and live555 do, not RFC 3986 resolution, which would
// drop the stream name from "rtsp://h/x" + "trackID=0").
func (c *Client) controlURL(control string) string {
	switch {
	case control == "" || control == "*":
		return c.contentBase
	case strings.Contains(control, "://"):
		return control
	}
	return strings.TrimRight(c.contentBase, "/") + "/" + strings.TrimLeft(control, "/")
}

// SetupTCP sets up one media section to arrive interleaved on the given
// channel pair (ch for RTP, ch+1 for RTCP).
func (c *Client) SetupTCP(ctx context.Context, m Media, ch int) error {
	tr := wire.Transport{Profile: "RTP/AVP", TCP: true, Interleaved: [2]int{ch, ch + 1}}
	resp, err := c.do(ctx, wire.MethodSetup, c.controlURL(m.Control), wire.Header{"Transport": {tr.String()}})
	if err != nil {
		return err
	}
	if c.session == "" {
		s, err := wire.ParseSession(resp.Header.Get("Session"))
		if err != nil {
			return fmt.Errorf("rtsp: SETUP answer without a session: %w", err)
		}
		c.session = s.ID
		c.sessionTimeout = time.Duration(s.Timeout) * time.Second
	}
	got, err := wire.ParseTransport(resp.Header.Get("Transport"))
	if err == nil && got.TCP && got.Interleaved[0] >= 0 && got.Interleaved[0] != ch {
		return fmt.Errorf("rtsp: the server moved track %q to channel %d", m.Control, got.Interleaved[0])
	}
	return nil
}

// Play starts the media.
func (c *Client) Play(ctx context.Context) error {
	_, err := c.do(ctx, wire.MethodPlay, c.base.String(), wire.Header{"Range": {"npt=0.000-"}})
	return err
}

// KeepaliveInterval is how often a playing session should send Keepalive:
// half the server's session timeout (60 s when it names none).
func (c *Client) KeepaliveInterval() time.Duration {
	if c.sessionTimeout > 0 {
		return c.sessionTimeout / 2
	}
	return 30 * time.Second
}

// Keepalive sends a GET_PARAMETER without waiting: ReadFrames skips the
// answer.
func (c *Client) Keepalive() error {
	c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	return c.send(wire.MethodGetParameter, c.base.String(), nil, nil)
}

// WriteFrame sends an interleaved frame (RTCP to the server).
func (c *Client) WriteFrame(ch byte, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	b := wire.AppendFrameHeader(make([]byte, 0, wire.FrameHeaderSize+len(payload)), ch, len(payload))
	_, err := c.nc.Write(append(b, payload...))
	return err
}

// ErrNoData is returned by ReadFrames when the server sent nothing for the
// idle timeout.
var ErrNoData = errors.New("rtsp: no data from the server")

// ReadFrames reads interleaved frames until the connection fails, calling
// fn with each payload in a buffer of its own. Answers to keepalives are
// read and dropped. idle bounds the silence between two messages.
func (c *Client) ReadFrames(idle time.Duration, fn func(ch byte, payload []byte)) error {
	for {
		c.nc.SetReadDeadline(time.Now().Add(idle))
		frame, err := wire.IsFrame(c.br)
		if err != nil {
			if isTimeout(err) {
				return ErrNoData
			}
			return err
		}
		if !frame {
			if _, err := wire.ReadResponse(c.br, wire.Limits{MaxBodyBytes: 1 << 20}); err != nil {
				return err
			}
			continue
		}
		ch, payload, err := wire.ReadFrame(c.br, nil)
		if err != nil {
			return err
		}
		fn(ch, payload)
	}
}
