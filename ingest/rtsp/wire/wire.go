// Package wire owns the RTSP/1.0 wire format (RFC 2326, with the RFC 7826
// details real clients rely on): requests and responses with their
// headers and bodies, the interleaved binary frames that carry RTP and
// RTCP on the RTSP connection ($, channel, length), and the structured
// headers a server and a client need: Transport, Session, Range, RTP-Info
// and Basic/Digest authentication.
//
// Parsing never panics and never allocates more than the configured limits
// whatever the input; errors carry the RTSP status a server should answer.
package wire

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/textproto"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// Methods (RFC 2326 §10).
const (
	MethodOptions      = "OPTIONS"
	MethodDescribe     = "DESCRIBE"
	MethodAnnounce     = "ANNOUNCE"
	MethodSetup        = "SETUP"
	MethodPlay         = "PLAY"
	MethodPause        = "PAUSE"
	MethodRecord       = "RECORD"
	MethodTeardown     = "TEARDOWN"
	MethodGetParameter = "GET_PARAMETER"
	MethodSetParameter = "SET_PARAMETER"
	MethodRedirect     = "REDIRECT"
)

// Proto is the only protocol version spoken.
const Proto = "RTSP/1.0"

// Status codes used by this server and its client (RFC 2326 §7.1.1).
const (
	StatusOK                          = 200
	StatusMovedPermanently            = 301
	StatusFound                       = 302
	StatusBadRequest                  = 400
	StatusUnauthorized                = 401
	StatusForbidden                   = 403
	StatusNotFound                    = 404
	StatusMethodNotAllowed            = 405
	StatusNotAcceptable               = 406
	StatusRequestEntityTooLarge       = 413
	StatusRequestURITooLarge          = 414
	StatusUnsupportedMediaType        = 415
	StatusNotEnoughBandwidth          = 453
	StatusSessionNotFound             = 454
	StatusMethodNotValidInThisState   = 455
	StatusHeaderFieldNotValid         = 456
	StatusAggregateOperationNotAllowd = 459
	StatusUnsupportedTransport        = 461
	StatusInternalServerError         = 500
	StatusNotImplemented              = 501
	StatusServiceUnavailable          = 503
	StatusVersionNotSupported         = 505
	StatusOptionNotSupported          = 551
)

var statusText = map[int]string{
	200: "OK", 301: "Moved Permanently", 302: "Moved Temporarily", 400: "Bad Request",
	401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
	406: "Not Acceptable", 413: "Request Entity Too Large", 414: "Request-URI Too Large",
	415: "Unsupported Media Type", 453: "Not Enough Bandwidth", 454: "Session Not Found",
	455: "Method Not Valid in This State", 456: "Header Field Not Valid for Resource",
	459: "Aggregate Operation Not Allowed", 461: "Unsupported Transport",
	500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable",
	505: "RTSP Version Not Supported", 551: "Option not supported",
}

// StatusText is the reason phrase of a status code.
func StatusText(code int) string {
	if s, ok := statusText[code]; ok {
		return s
	}
	return "Status " + strconv.Itoa(code)
}

// Limits bound what a reader accepts. The zero value means DefaultLimits.
type Limits struct {
	MaxLineBytes   int // request/status line and each header line
	MaxHeaderBytes int // all header lines together
	MaxHeaders     int
	MaxBodyBytes   int
}

// DefaultLimits fit every real client with room to spare: SDP bodies are a
// few KB, URLs with keys well under 1 KB.
var DefaultLimits = Limits{MaxLineBytes: 4096, MaxHeaderBytes: 16 << 10, MaxHeaders: 64, MaxBodyBytes: 64 << 10}

func (l Limits) orDefault() Limits {
	d := DefaultLimits
	if l.MaxLineBytes > 0 {
		d.MaxLineBytes = l.MaxLineBytes
	}
	if l.MaxHeaderBytes > 0 {
		d.MaxHeaderBytes = l.MaxHeaderBytes
	}
	if l.MaxHeaders > 0 {
		d.MaxHeaders = l.MaxHeaders
	}
	if l.MaxBodyBytes > 0 {
		d.MaxBodyBytes = l.MaxBodyBytes
	}
	return d
}

// Error is a malformed or unacceptable message: Status is what a server
// answers before closing the connection (the stream is out of sync).
type Error struct {
	Status int
	Msg    string
}

func (e *Error) Error() string { return "rtsp: " + e.Msg }

func errorf(status int, format string, args ...any) error {
	return &Error{Status: status, Msg: fmt.Sprintf(format, args...)}
}

// StatusOf returns the status a server answers for a read error (400 for
// anything that is not an *Error).
func StatusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return StatusBadRequest
}

// Header is a set of RTSP headers. Names compare case-insensitively; they
// are written in the spelling RFC 2326 uses (CSeq, WWW-Authenticate,
// RTP-Info), which some clients require.
type Header map[string][]string

// canonical spellings that textproto's rule gets wrong for RTSP.
var spellings = map[string]string{
	"cseq": "CSeq", "www-authenticate": "WWW-Authenticate", "rtp-info": "RTP-Info",
	"content-base": "Content-Base", "content-length": "Content-Length", "content-type": "Content-Type",
}

// CanonicalName returns the spelling a header name is stored and written in.
func CanonicalName(name string) string {
	if s, ok := spellings[strings.ToLower(name)]; ok {
		return s
	}
	return textproto.CanonicalMIMEHeaderKey(name)
}

// Get returns the first value of a header, or "".
func (h Header) Get(name string) string {
	if v := h[CanonicalName(name)]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Values returns every value of a header.
func (h Header) Values(name string) []string { return h[CanonicalName(name)] }

// Set replaces a header's values with one.
func (h Header) Set(name, value string) { h[CanonicalName(name)] = []string{value} }

// Add appends a value to a header.
func (h Header) Add(name, value string) {
	k := CanonicalName(name)
	h[k] = append(h[k], value)
}

// Del removes a header.
func (h Header) Del(name string) { delete(h, CanonicalName(name)) }

// write writes the headers in a stable order, CSeq first.
func (h Header) write(w *bufio.Writer) {
	names := make([]string, 0, len(h))
	for k := range h {
		names = append(names, k)
	}
	sort.Slice(names, func(i, j int) bool {
		if (names[i] == "CSeq") != (names[j] == "CSeq") {
			return names[i] == "CSeq"
		}
		return names[i] < names[j]
	})
	for _, k := range names {
		for _, v := range h[k] {
			// A value must not end the header block early.
			v = strings.NewReplacer("\r", " ", "\n", " ").Replace(v)
			w.WriteString(k)
			w.WriteString(": ")
			w.WriteString(v)
			w.WriteString("\r\n")
		}
	}
}

// Request is an RTSP request.
type Request struct {
	Method string
	// URL is the parsed request URI; nil for "*" (OPTIONS * RTSP/1.0).
	URL    *url.URL
	RawURL string
	Proto  string
	Header Header
	Body   []byte
}

// CSeq returns the request's sequence number header value.
func (r *Request) CSeq() string { return r.Header.Get("CSeq") }

// Write serializes the request; Content-Length is set from Body.
func (r *Request) Write(w io.Writer) error {
	bw := bufio.NewWriter(w)
	proto := r.Proto
	if proto == "" {
		proto = Proto
	}
	target := r.RawURL
	if target == "" && r.URL != nil {
		target = r.URL.String()
	}
	bw.WriteString(r.Method + " " + target + " " + proto + "\r\n")
	h := r.Header
	if h == nil {
		h = Header{}
	}
	if len(r.Body) > 0 {
		h.Set("Content-Length", strconv.Itoa(len(r.Body)))
	}
	h.write(bw)
	bw.WriteString("\r\n")
	bw.Write(r.Body)
	return bw.Flush()
}

// Response is an RTSP response.
type Response struct {
	Proto      string
	StatusCode int
	Reason     string // the status text if empty
	Header     Header
	Body       []byte
}

// NewResponse returns a response with the status and the request's CSeq.
func NewResponse(req *Request, status int) *Response {
	h := Header{}
	if req != nil {
		if cseq := req.CSeq(); cseq != "" {
			h.Set("CSeq", cseq)
		}
	}
	return &Response{Proto: Proto, StatusCode: status, Header: h}
}

// Write serializes the response; Content-Length is always set.
func (r *Response) Write(w io.Writer) error {
	bw := bufio.NewWriter(w)
	if err := r.WriteTo(bw); err != nil {
		return err
	}
	return bw.Flush()
}

// WriteTo serializes the response into a buffered writer without flushing.
func (r *Response) WriteTo(bw *bufio.Writer) error {
	proto := r.Proto
	if proto == "" {
		proto = Proto
	}
	reason := r.Reason
	if reason == "" {
		reason = StatusText(r.StatusCode)
	}
	bw.WriteString(proto + " " + strconv.Itoa(r.StatusCode) + " " + reason + "\r\n")
	h := r.Header
	if h == nil {
		h = Header{}
	}
	h.Set("Content-Length", strconv.Itoa(len(r.Body)))
	h.write(bw)
	bw.WriteString("\r\n")
	_, err := bw.Write(r.Body)
	return err
}

// ReadRequest reads one request. Leading empty lines (keepalive CRLFs some
// clients send) are skipped.
func ReadRequest(br *bufio.Reader, lim Limits) (*Request, error) {
	lim = lim.orDefault()
	line, err := readStartLine(br, lim)
	if err != nil {
		return nil, err
	}
	method, rest, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(strings.TrimLeft(rest, " "), " ")
	proto = strings.TrimSpace(proto)
	if !ok1 || !ok2 || method == "" || target == "" || proto == "" || strings.Contains(proto, " ") {
		return nil, errorf(StatusBadRequest, "malformed request line %q", truncate(line))
	}
	if !validToken(method) {
		return nil, errorf(StatusBadRequest, "malformed method %q", truncate(method))
	}
	req := &Request{Method: method, RawURL: target, Proto: proto}
	if !strings.HasPrefix(proto, "RTSP/") {
		return nil, errorf(StatusBadRequest, "not an RTSP request (%q)", truncate(proto))
	}
	if target != "*" {
		u, err := url.Parse(target)
		if err != nil || (u.Scheme != "" && !strings.EqualFold(u.Scheme, "rtsp") && !strings.EqualFold(u.Scheme, "rtsps")) {
			return nil, errorf(StatusBadRequest, "malformed request URI %q", truncate(target))
		}
		req.URL = u
	}
	if req.Header, err = readHeader(br, lim); err != nil {
		return nil, err
	}
	if proto != Proto {
		// Read fully so the caller can answer in sync, then refuse.
		body, _ := readBody(br, req.Header, lim)
		req.Body = body
		return req, errorf(StatusVersionNotSupported, "%s is not supported, speak %s", truncate(proto), Proto)
	}
	if req.Body, err = readBody(br, req.Header, lim); err != nil {
		return nil, err
	}
	return req, nil
}

// ReadResponse reads one response.
func ReadResponse(br *bufio.Reader, lim Limits) (*Response, error) {
	lim = lim.orDefault()
	line, err := readStartLine(br, lim)
	if err != nil {
		return nil, err
	}
	proto, rest, ok := strings.Cut(line, " ")
	if !ok || !strings.HasPrefix(proto, "RTSP/") {
		return nil, errorf(StatusBadRequest, "malformed status line %q", truncate(line))
	}
	codeStr, reason, _ := strings.Cut(strings.TrimLeft(rest, " "), " ")
	code, err := strconv.Atoi(codeStr)
	if err != nil || code < 100 || code > 999 {
		return nil, errorf(StatusBadRequest, "malformed status code %q", truncate(codeStr))
	}
	resp := &Response{Proto: proto, StatusCode: code, Reason: strings.TrimSpace(reason)}
	if resp.Header, err = readHeader(br, lim); err != nil {
		return nil, err
	}
	if resp.Body, err = readBody(br, resp.Header, lim); err != nil {
		return nil, err
	}
	return resp, nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

func validToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("()<>@,;:\\\"/[]?={}", c) >= 0 {
			return false
		}
	}
	return true
}

// readLine reads one line without its CRLF (or bare LF), refusing lines
// longer than max without buffering them.
func readLine(br *bufio.Reader, max int) (string, error) {
	var buf []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(buf)+len(chunk) > max+2 {
			return "", errorf(StatusRequestURITooLarge, "line longer than %d bytes", max)
		}
		buf = append(buf, chunk...)
		switch {
		case err == nil:
			buf = bytes.TrimSuffix(buf[:len(buf)-1], []byte{'\r'})
			return string(buf), nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(buf) > 0:
			return "", io.ErrUnexpectedEOF
		default:
			return "", err
		}
	}
}

// maxBlankLines bounds the empty lines skipped before a start line.
const maxBlankLines = 16

func readStartLine(br *bufio.Reader, lim Limits) (string, error) {
	for range maxBlankLines {
		line, err := readLine(br, lim.MaxLineBytes)
		if err != nil {
			return "", err
		}
		if line != "" {
			return line, nil
		}
	}
	return "", errorf(StatusBadRequest, "too many empty lines")
}

func readHeader(br *bufio.Reader, lim Limits) (Header, error) {
	h := Header{}
	total, count := 0, 0
	var last string
	for {
		line, err := readLine(br, lim.MaxLineBytes)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, io.ErrUnexpectedEOF
			}
			var e *Error
			if errors.As(err, &e) {
				e.Status, e.Msg = StatusBadRequest, "header "+e.Msg
			}
			return nil, err
		}
		if line == "" {
			return h, nil
		}
		total += len(line) + 2
		if total > lim.MaxHeaderBytes {
			return nil, errorf(StatusBadRequest, "headers larger than %d bytes", lim.MaxHeaderBytes)
		}
		if line[0] == ' ' || line[0] == '\t' {
			// Obsolete line folding: continue the previous header.
			if last == "" {
				return nil, errorf(StatusBadRequest, "continuation line without a header")
			}
			vs := h[last]
			vs[len(vs)-1] += " " + strings.TrimSpace(line)
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		name = strings.TrimSpace(name)
		if !ok || name == "" || !validToken(name) {
			return nil, errorf(StatusBadRequest, "malformed header line %q", truncate(line))
		}
		count++
		if count > lim.MaxHeaders {
			return nil, errorf(StatusBadRequest, "more than %d headers", lim.MaxHeaders)
		}
		last = CanonicalName(name)
		h[last] = append(h[last], strings.TrimSpace(value))
	}
}

func readBody(br *bufio.Reader, h Header, lim Limits) ([]byte, error) {
	cl := h.Get("Content-Length")
	if cl == "" {
		return nil, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(cl))
	if err != nil || n < 0 {
		return nil, errorf(StatusBadRequest, "malformed Content-Length %q", truncate(cl))
	}
	if n > lim.MaxBodyBytes {
		return nil, errorf(StatusRequestEntityTooLarge, "body of %d bytes, at most %d accepted", n, lim.MaxBodyBytes)
	}
	if n == 0 {
		return nil, nil
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(br, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return body, nil
}

// FrameMagic starts an interleaved binary frame (RFC 2326 §10.12).
const FrameMagic = '$'

// FrameHeaderSize is the size of an interleaved frame header.
const FrameHeaderSize = 4

// IsFrame reports whether the next byte starts an interleaved frame rather
// than an RTSP message. It blocks until a byte is available.
func IsFrame(br *bufio.Reader) (bool, error) {
	b, err := br.Peek(1)
	if err != nil {
		return false, err
	}
	return b[0] == FrameMagic, nil
}

// ReadFrame reads one interleaved frame. The payload is read into buf when
// it fits (pass a buffer of 65535 bytes to never allocate), else into a new
// slice.
func ReadFrame(br *bufio.Reader, buf []byte) (channel byte, payload []byte, err error) {
	var hdr [FrameHeaderSize]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) && len(hdr) > 0 {
			return 0, nil, err
		}
		return 0, nil, err
	}
	if hdr[0] != FrameMagic {
		return 0, nil, errorf(StatusBadRequest, "interleaved frame does not start with '$'")
	}
	n := int(hdr[2])<<8 | int(hdr[3])
	if cap(buf) >= n {
		payload = buf[:n]
	} else {
		payload = make([]byte, n)
	}
	if _, err := io.ReadFull(br, payload); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return hdr[1], payload, nil
}

// MaxFramePayload is the largest payload one interleaved frame carries.
const MaxFramePayload = 0xffff

// AppendFrameHeader appends the header of an interleaved frame of n bytes.
func AppendFrameHeader(dst []byte, channel byte, n int) []byte {
	return append(dst, FrameMagic, channel, byte(n>>8), byte(n))
}
