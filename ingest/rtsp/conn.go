package rtsp

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/backchannel/backchannel/ingest/rtsp/wire"
	"github.com/backchannel/backchannel/internal/media"
)

// publicMethods answer OPTIONS.
const publicMethods = "OPTIONS, DESCRIBE, ANNOUNCE, SETUP, PLAY, PAUSE, RECORD, TEARDOWN, GET_PARAMETER, SET_PARAMETER"

// conn is one RTSP connection: its reading goroutine handles requests and
// interleaved frames in order; responses and frames for readers share a
// locked writer.
type conn struct {
	srv    *Server
	nc     net.Conn
	br     *bufio.Reader
	remote netip.AddrPort
	log    *slog.Logger

	wmu sync.Mutex
	bw  *bufio.Writer

	out       chan *[]byte // interleaved frames for a reader, nil until PLAY over TCP
	writerOn  bool
	writerWG  sync.WaitGroup
	done      chan struct{}
	closeOnce sync.Once

	// Owned by the reading goroutine.
	announce *announcement
	session  *session
}

// announcement is what ANNOUNCE established on a connection, until SETUP
// turns it into a session.
type announcement struct {
	stream      string
	medias      []Media
	keyID, key  string
	sessControl string
}

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{srv: s, nc: nc, br: bufio.NewReaderSize(nc, 4096), bw: bufio.NewWriterSize(nc, 4096), done: make(chan struct{})}
	if ap, err := netip.ParseAddrPort(nc.RemoteAddr().String()); err == nil {
		c.remote = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	c.log = s.log.With("remote", nc.RemoteAddr().String())
	return c
}

// close ends the connection from any goroutine; the reading goroutine then
// ends its session.
func (c *conn) close() {
	c.closeOnce.Do(func() {
		close(c.done)
		c.nc.Close()
	})
}

func (c *conn) serve() {
	defer func() {
		c.close()
		if c.session != nil {
			c.session.end("connection closed")
			c.session = nil
		}
		c.writerWG.Wait()
	}()
	frameBuf := make([]byte, wire.MaxFramePayload)
	for {
		c.nc.SetReadDeadline(c.idleDeadline())
		frame, err := wire.IsFrame(c.br)
		if err != nil {
			return
		}
		if frame {
			ch, payload, err := wire.ReadFrame(c.br, frameBuf)
			if err != nil {
				return
			}
			c.handleFrame(ch, payload)
			continue
		}
		c.nc.SetReadDeadline(time.Now().Add(requestTimeout))
		req, err := wire.ReadRequest(c.br, wire.Limits{})
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) || isTimeout(err) {
				return
			}
			// The stream is out of step: answer and hang up. The
			// request, when there is one, gives the CSeq.
			status := wire.StatusOf(err)
			c.srv.metrics.rejections.WithLabelValues("bad_request").Inc()
			c.log.Debug("bad RTSP request", "err", err)
			resp := wire.NewResponse(req, status)
			resp.Header.Set("Content-Type", "text/plain")
			resp.Body = []byte(err.Error() + "\n")
			c.writeResponse(resp)
			return
		}
		c.srv.metrics.requests.WithLabelValues(methodLabel(req.Method)).Inc()
		resp, hangUp := c.handle(req)
		resp.Header.Set("Server", "backchannel")
		if !c.writeResponse(resp) || hangUp {
			return
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// idleDeadline is how long the connection may stay silent. With a
// session, forever: the janitor ends sessions by their own activity, which
// for UDP comes on other sockets (ffmpeg publishing over UDP sends no RTSP
// keepalive), and readers over TCP need send nothing (a dead one is found
// by the write deadline). Without one, the session timeout.
func (c *conn) idleDeadline() time.Time {
	if c.session != nil {
		return time.Time{}
	}
	return time.Now().Add(c.srv.cfg.SessionTimeout)
}

func (c *conn) writeResponse(resp *wire.Response) bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	if err := resp.WriteTo(c.bw); err != nil {
		return false
	}
	return c.bw.Flush() == nil
}

// handleFrame routes an interleaved frame to the session's track.
func (c *conn) handleFrame(ch byte, payload []byte) {
	if c.session != nil {
		c.session.handleFrame(ch, payload)
	}
}

// startWriter starts the goroutine that writes interleaved frames for a
// reader session.
func (c *conn) startWriter() {
	if c.writerOn {
		return
	}
	c.writerOn = true
	c.out = make(chan *[]byte, 1024)
	c.writerWG.Add(1)
	go c.writeFrames()
}

// enqueue queues an interleaved frame without blocking; false when the
// reader is too slow and the frame was dropped.
func (c *conn) enqueue(b *[]byte) bool {
	select {
	case c.out <- b:
		return true
	default:
		putBuf(b)
		return false
	}
}

func (c *conn) writeFrames() {
	defer c.writerWG.Done()
	for {
		var b *[]byte
		select {
		case b = <-c.out:
		case <-c.done:
			return
		}
		c.wmu.Lock()
		c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
		_, err := c.bw.Write(*b)
		putBuf(b)
		// Drain what is queued before flushing: one write per burst.
	drain:
		for err == nil {
			select {
			case b = <-c.out:
				_, err = c.bw.Write(*b)
				putBuf(b)
			default:
				break drain
			}
		}
		if err == nil {
			err = c.bw.Flush()
		}
		c.wmu.Unlock()
		if err != nil {
			c.log.Debug("RTSP reader write failed", "err", err)
			c.close()
			return
		}
	}
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 1600); return &b }}

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) > 64<<10 {
		return
	}
	*b = (*b)[:0]
	bufPool.Put(b)
}

// response builds a response with a plain-text reason for errors.
func response(req *wire.Request, status int, detail string) *wire.Response {
	resp := wire.NewResponse(req, status)
	if detail != "" {
		resp.Header.Set("Content-Type", "text/plain")
		resp.Body = []byte(detail + "\n")
	}
	return resp
}

// handle answers one request; hangUp closes the connection after the
// answer.
func (c *conn) handle(req *wire.Request) (resp *wire.Response, hangUp bool) {
	// A request naming a session must name this connection's.
	if sh := req.Header.Get("Session"); sh != "" {
		sid, err := wire.ParseSession(sh)
		if err != nil {
			return response(req, wire.StatusBadRequest, err.Error()), false
		}
		if c.session == nil || c.session.id != sid.ID {
			c.srv.metrics.rejections.WithLabelValues("session_not_found").Inc()
			return response(req, wire.StatusSessionNotFound, "no such session on this connection"), false
		}
	}
	if c.session != nil {
		c.session.touch()
	}
	switch req.Method {
	case wire.MethodOptions:
		resp := wire.NewResponse(req, wire.StatusOK)
		resp.Header.Set("Public", publicMethods)
		return resp, false
	case wire.MethodGetParameter, wire.MethodSetParameter:
		// Keepalives.
		resp := wire.NewResponse(req, wire.StatusOK)
		c.addSessionHeader(resp)
		return resp, false
	case wire.MethodDescribe:
		return c.describe(req), false
	case wire.MethodAnnounce:
		return c.announceReq(req), false
	case wire.MethodSetup:
		return c.setup(req), false
	case wire.MethodRecord:
		return c.record(req), false
	case wire.MethodPlay:
		return c.play(req), false
	case wire.MethodPause:
		return c.pause(req), false
	case wire.MethodTeardown:
		resp := wire.NewResponse(req, wire.StatusOK)
		if c.session != nil {
			c.session.end("teardown")
			c.session = nil
		}
		c.announce = nil
		return resp, false
	}
	resp = response(req, wire.StatusNotImplemented, "method "+req.Method+" is not implemented")
	resp.Header.Set("Public", publicMethods)
	return resp, false
}

func (c *conn) addSessionHeader(resp *wire.Response) {
	if c.session != nil {
		resp.Header.Set("Session", wire.Session{ID: c.session.id, Timeout: int(c.srv.cfg.SessionTimeout / time.Second)}.String())
	}
}

func (c *conn) reject(req *wire.Request, reason string, status int, detail string) *wire.Response {
	c.srv.metrics.rejections.WithLabelValues(reason).Inc()
	c.log.Debug("RTSP request refused", "method", req.Method, "url", req.RawURL, "status", status, "detail", detail)
	return response(req, status, detail)
}

// streamOf checks a request URL's stream name.
func (c *conn) streamOf(req *wire.Request) (stream, tail, rawQuery string, resp *wire.Response) {
	if req.URL == nil {
		return "", "", "", c.reject(req, "bad_request", wire.StatusBadRequest, "this method needs a stream URL")
	}
	stream, tail, rawQuery = controlTail(req.URL)
	if !media.ValidStreamName(stream) {
		return "", "", "", c.reject(req, "bad_stream", wire.StatusBadRequest,
			"the URL path is the stream name: 1-64 characters of A-Z a-z 0-9 _ . -")
	}
	return stream, tail, rawQuery, nil
}

func queryKey(rawQuery string) string {
	q, _ := url.ParseQuery(rawQuery)
	return q.Get("key")
}

// baseURL is the aggregate URL of a stream as the client addressed it.
func baseURL(req *wire.Request, stream string) string {
	host := req.URL.Host
	if host == "" {
		host = "localhost"
	}
	return "rtsp://" + host + "/" + url.PathEscape(stream)
}

func (c *conn) describe(req *wire.Request) *wire.Response {
	stream, tail, _, bad := c.streamOf(req)
	if bad != nil {
		return bad
	}
	if tail != "" {
		return c.reject(req, "not_found", wire.StatusNotFound, "DESCRIBE the stream URL rtsp://host/"+stream)
	}
	st := c.waitLive(stream)
	if st == nil {
		return c.reject(req, "offline", wire.StatusNotFound, "stream "+stream+" is not on air")
	}
	tracks := st.Tracks()
	if len(tracks) == 0 {
		return c.reject(req, "offline", wire.StatusNotFound, "stream "+stream+" has no tracks")
	}
	host := "0.0.0.0"
	if la, ok := c.nc.LocalAddr().(*net.TCPAddr); ok && la.IP.To4() != nil {
		host = la.IP.String()
	}
	base := baseURL(req, stream)
	body, _ := buildSDP(base, stream, host, tracks, st.Info().StartedAt)
	resp := wire.NewResponse(req, wire.StatusOK)
	resp.Header.Set("Content-Type", "application/sdp")
	resp.Header.Set("Content-Base", base+"/")
	resp.Body = body
	return resp
}

// waitLive finds a live stream, giving an on-demand source time to start.
func (c *conn) waitLive(stream string) *media.Stream {
	reg := c.srv.cfg.Registry
	st, ok := reg.Lookup(stream)
	if ok && st.Live() {
		return st
	}
	if !reg.Demand(stream) {
		return nil
	}
	deadline := time.Now().Add(describeWait)
	for time.Now().Before(deadline) {
		select {
		case <-c.done:
			return nil
		case <-time.After(50 * time.Millisecond):
		}
		if st, ok := reg.Lookup(stream); ok && st.Live() {
			return st
		}
	}
	return nil
}

func (c *conn) announceReq(req *wire.Request) *wire.Response {
	stream, tail, rawQuery, bad := c.streamOf(req)
	if bad != nil {
		return bad
	}
	if tail != "" {
		return c.reject(req, "not_found", wire.StatusNotFound, "ANNOUNCE the stream URL rtsp://host/"+stream)
	}
	if c.session != nil {
		return c.reject(req, "bad_state", wire.StatusMethodNotValidInThisState, "this connection already has a session")
	}
	keyID, secret, status, detail := c.srv.authorize(req, stream, rawQuery)
	if status != 0 {
		resp := c.reject(req, "auth", status, detail)
		for _, ch := range c.srv.challenges() {
			resp.Header.Add("WWW-Authenticate", ch)
		}
		return resp
	}
	if ct := req.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(strings.ToLower(strings.TrimSpace(ct)), "application/sdp") {
		return c.reject(req, "bad_request", wire.StatusUnsupportedMediaType, "ANNOUNCE takes an application/sdp body")
	}
	sessControl, medias, err := parseSDP(req.Body)
	if err != nil {
		return c.reject(req, "bad_sdp", wire.StatusBadRequest, err.Error())
	}
	var usable int
	var why []string
	for _, m := range medias {
		if m.Unsupported == "" {
			usable++
		} else {
			why = append(why, m.Unsupported)
		}
	}
	if usable == 0 {
		return c.reject(req, "bad_sdp", wire.StatusUnsupportedMediaType,
			"no supported media (H.264, H.265, AAC, Opus, G.711); offered: "+strings.Join(why, ", "))
	}
	c.announce = &announcement{stream: stream, medias: medias, keyID: keyID, key: secret, sessControl: sessControl}
	c.log.Info("RTSP stream announced", "stream", stream, "key", keyID, "tracks", len(medias))
	return wire.NewResponse(req, wire.StatusOK)
}

func (c *conn) setup(req *wire.Request) *wire.Response {
	stream, tail, _, bad := c.streamOf(req)
	if bad != nil {
		return bad
	}
	th := req.Header.Get("Transport")
	if th == "" {
		return c.reject(req, "bad_transport", wire.StatusUnsupportedTransport, "SETUP needs a Transport header")
	}
	alts, err := wire.ParseTransports(th)
	if err != nil {
		return c.reject(req, "bad_transport", wire.StatusOf(err), err.Error())
	}
	tr, ok := c.pickTransport(alts)
	if !ok {
		return c.reject(req, "bad_transport", wire.StatusUnsupportedTransport,
			"supported: RTP/AVP/TCP (interleaved) and RTP/AVP unicast with client_port")
	}
	if c.session != nil && c.session.stream != stream {
		return c.reject(req, "bad_state", wire.StatusAggregateOperationNotAllowd, "a session serves one stream")
	}
	publishing := c.announce != nil && c.announce.stream == stream
	if c.session != nil {
		publishing = c.session.mode == modePublish
	}
	if tr.Mode == "record" && !publishing {
		return c.reject(req, "bad_state", wire.StatusMethodNotValidInThisState, "ANNOUNCE the stream before SETUP with mode=record")
	}
	if c.session == nil {
		mode := modePlay
		if publishing {
			mode = modePublish
		}
		ss := newSession(c, stream, mode)
		if !c.srv.addSession(ss) {
			return c.reject(req, "capacity", wire.StatusNotEnoughBandwidth, "the server is at its session limit")
		}
		if publishing {
			ss.announce = c.announce
			c.announce = nil
		}
		c.session = ss
		c.srv.metrics.sessions.WithLabelValues("setup").Inc()
	}
	ss := c.session
	var status int
	var detail string
	if ss.mode == modePublish {
		status, detail = ss.setupPublish(tail, &tr)
	} else {
		status, detail = ss.setupPlay(tail, &tr)
	}
	if status != wire.StatusOK {
		return c.reject(req, "bad_setup", status, detail)
	}
	resp := wire.NewResponse(req, wire.StatusOK)
	resp.Header.Set("Transport", tr.String())
	c.addSessionHeader(resp)
	return resp
}

// pickTransport chooses the first alternative the server can do and fills
// in the server's side.
func (c *conn) pickTransport(alts []wire.Transport) (wire.Transport, bool) {
	for _, t := range alts {
		if t.Multicast || (t.Profile != "RTP/AVP") {
			continue
		}
		if !t.TCP && (c.srv.udp == nil || t.ClientPort[0] == 0 || !c.remote.IsValid()) {
			continue
		}
		return t, true
	}
	return wire.Transport{}, false
}

func (c *conn) record(req *wire.Request) *wire.Response {
	if c.session == nil || c.session.mode != modePublish {
		return c.reject(req, "bad_state", wire.StatusMethodNotValidInThisState, "ANNOUNCE and SETUP before RECORD")
	}
	status, detail := c.session.record()
	if status != wire.StatusOK {
		return c.reject(req, "record", status, detail)
	}
	resp := wire.NewResponse(req, wire.StatusOK)
	c.addSessionHeader(resp)
	return resp
}

func (c *conn) play(req *wire.Request) *wire.Response {
	if c.session == nil || c.session.mode != modePlay {
		return c.reject(req, "bad_state", wire.StatusMethodNotValidInThisState, "DESCRIBE and SETUP before PLAY")
	}
	base := c.session.stream
	if req.URL != nil {
		base = baseURL(req, c.session.stream)
	}
	infos, status, detail := c.session.play(base)
	if status != wire.StatusOK {
		return c.reject(req, "play", status, detail)
	}
	resp := wire.NewResponse(req, wire.StatusOK)
	c.addSessionHeader(resp)
	resp.Header.Set("Range", "npt=now-")
	if len(infos) > 0 {
		resp.Header.Set("RTP-Info", wire.FormatRTPInfo(infos))
	}
	return resp
}

func (c *conn) pause(req *wire.Request) *wire.Response {
	if c.session == nil || c.session.mode != modePlay {
		return c.reject(req, "bad_state", wire.StatusMethodNotValidInThisState, "only a playing session pauses")
	}
	c.session.pause()
	resp := wire.NewResponse(req, wire.StatusOK)
	c.addSessionHeader(resp)
	return resp
}
