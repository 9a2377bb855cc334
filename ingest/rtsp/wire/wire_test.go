package wire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

const ffmpegAnnounce = "ANNOUNCE rtsp://127.0.0.1:8554/x?key=abc RTSP/1.0\r\n" +
	"Content-Type: application/sdp\r\n" +
	"CSeq: 2\r\n" +
	"User-Agent: Lavf59.27.100\r\n" +
	"Content-Length: 17\r\n" +
	"\r\n" +
	"v=0\r\no=- 0 0 IN\r\n"

func reader(s string) *bufio.Reader { return bufio.NewReader(strings.NewReader(s)) }

func TestReadRequestFFmpegAnnounce(t *testing.T) {
	req, err := ReadRequest(reader(ffmpegAnnounce), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if req.Method != MethodAnnounce || req.CSeq() != "2" || req.Header.Get("cseq") != "2" {
		t.Fatalf("request %+v", req)
	}
	if req.URL.Host != "127.0.0.1:8554" || req.URL.Path != "/x" || req.URL.Query().Get("key") != "abc" {
		t.Fatalf("URL %v", req.URL)
	}
	if string(req.Body) != "v=0\r\no=- 0 0 IN\r\n" {
		t.Fatalf("body %q", req.Body)
	}
}

func TestReadRequestSkipsBlankLinesAndFoldsHeaders(t *testing.T) {
	in := "\r\n\r\nOPTIONS * RTSP/1.0\nCSeq: 1\nX-Long: a\n  b\n\n"
	req, err := ReadRequest(reader(in), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if req.URL != nil || req.RawURL != "*" || req.Header.Get("X-Long") != "a b" {
		t.Fatalf("request %+v", req)
	}
}

func TestReadRequestErrors(t *testing.T) {
	long := strings.Repeat("a", 5000)
	cases := []struct {
		name   string
		in     string
		status int
	}{
		{"garbage", "\x01\x02\x03 hello\r\n\r\n", StatusBadRequest},
		{"no proto", "OPTIONS rtsp://h/x\r\n\r\n", StatusBadRequest},
		{"http", "GET / HTTP/1.1\r\n\r\n", StatusBadRequest},
		{"bad uri", "OPTIONS rtsp://h/%zz RTSP/1.0\r\n\r\n", StatusBadRequest},
		{"other scheme", "OPTIONS http://h/x RTSP/1.0\r\n\r\n", StatusBadRequest},
		{"version", "OPTIONS rtsp://h/x RTSP/2.0\r\nCSeq: 1\r\n\r\n", StatusVersionNotSupported},
		{"long uri", "OPTIONS rtsp://h/" + long + " RTSP/1.0\r\n\r\n", StatusRequestURITooLarge},
		{"long header", "OPTIONS * RTSP/1.0\r\nX: " + long + "\r\n\r\n", StatusBadRequest},
		{"many headers", "OPTIONS * RTSP/1.0\r\n" + strings.Repeat("X: y\r\n", 100) + "\r\n", StatusBadRequest},
		{"header bytes", "OPTIONS * RTSP/1.0\r\n" + strings.Repeat("X: "+strings.Repeat("y", 3000)+"\r\n", 8) + "\r\n", StatusBadRequest},
		{"bad header", "OPTIONS * RTSP/1.0\r\nno colon\r\n\r\n", StatusBadRequest},
		{"fold first", "OPTIONS * RTSP/1.0\r\n x\r\n\r\n", StatusBadRequest},
		{"bad length", "ANNOUNCE * RTSP/1.0\r\nContent-Length: -4\r\n\r\n", StatusBadRequest},
		{"huge body", "ANNOUNCE * RTSP/1.0\r\nContent-Length: 99999999\r\n\r\n", StatusRequestEntityTooLarge},
	}
	for _, c := range cases {
		req, err := ReadRequest(reader(c.in), Limits{})
		if err == nil {
			t.Errorf("%s: accepted", c.name)
			continue
		}
		if got := StatusOf(err); got != c.status {
			t.Errorf("%s: status %d (%v), want %d", c.name, got, err, c.status)
		}
		if c.status == StatusVersionNotSupported && (req == nil || req.CSeq() != "1") {
			t.Errorf("%s: the request is not returned for the answer's CSeq", c.name)
		}
	}
}

func TestReadRequestTruncated(t *testing.T) {
	for _, in := range []string{"OPTIONS * RT", "OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n", ffmpegAnnounce[:len(ffmpegAnnounce)-4]} {
		_, err := ReadRequest(reader(in), Limits{})
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("%q: err %v, want ErrUnexpectedEOF", in, err)
		}
	}
	if _, err := ReadRequest(reader(""), Limits{}); !errors.Is(err, io.EOF) {
		t.Errorf("empty input: %v", err)
	}
}

func TestResponseRoundTrip(t *testing.T) {
	req := &Request{Method: MethodSetup, RawURL: "rtsp://h/x/trackID=0", Header: Header{}}
	req.Header.Set("cseq", "7")
	resp := NewResponse(req, StatusOK)
	resp.Header.Set("session", "abc;timeout=60")
	resp.Header.Set("www-authenticate", `Digest realm="r", nonce="n"`)
	resp.Body = []byte("v=0\r\n")
	var buf bytes.Buffer
	if err := resp.Write(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if !strings.HasPrefix(out, "RTSP/1.0 200 OK\r\nCSeq: 7\r\n") || !strings.Contains(out, "WWW-Authenticate: ") ||
		!strings.Contains(out, "Content-Length: 5\r\n") {
		t.Fatalf("wire form:\n%s", out)
	}
	got, err := ReadResponse(bufio.NewReader(&buf), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if got.StatusCode != 200 || got.Header.Get("CSeq") != "7" || got.Header.Get("Session") != "abc;timeout=60" || string(got.Body) != "v=0\r\n" {
		t.Fatalf("read back %+v", got)
	}
	// A header value cannot inject lines.
	resp = NewResponse(nil, StatusBadRequest)
	resp.Header.Set("X", "a\r\nCSeq: 9")
	buf.Reset()
	_ = resp.Write(&buf)
	got, err = ReadResponse(bufio.NewReader(&buf), Limits{})
	if err != nil || got.Header.Get("CSeq") != "" {
		t.Fatalf("header injection: %v %+v", err, got.Header)
	}
}

func TestRequestWriteRead(t *testing.T) {
	req := &Request{Method: MethodAnnounce, RawURL: "rtsp://h/x", Header: Header{}, Body: []byte("v=0\r\n")}
	req.Header.Set("CSeq", "3")
	var buf bytes.Buffer
	if err := req.Write(&buf); err != nil {
		t.Fatal(err)
	}
	got, err := ReadRequest(bufio.NewReader(&buf), Limits{})
	if err != nil || got.Method != MethodAnnounce || string(got.Body) != "v=0\r\n" || got.CSeq() != "3" {
		t.Fatalf("%v %+v", err, got)
	}
}

func TestFramesBetweenRequests(t *testing.T) {
	var b []byte
	b = AppendFrameHeader(b, 0, 3)
	b = append(b, 1, 2, 3)
	b = append(b, "GET_PARAMETER rtsp://h/x RTSP/1.0\r\nCSeq: 5\r\n\r\n"...)
	b = AppendFrameHeader(b, 1, 0)
	br := bufio.NewReader(bytes.NewReader(b))
	buf := make([]byte, MaxFramePayload)

	if ok, err := IsFrame(br); !ok || err != nil {
		t.Fatal("first message is a frame")
	}
	ch, p, err := ReadFrame(br, buf)
	if err != nil || ch != 0 || !bytes.Equal(p, []byte{1, 2, 3}) {
		t.Fatalf("frame: %d %v %v", ch, p, err)
	}
	if ok, _ := IsFrame(br); ok {
		t.Fatal("request taken for a frame")
	}
	req, err := ReadRequest(br, Limits{})
	if err != nil || req.Method != MethodGetParameter {
		t.Fatalf("request: %v %v", req, err)
	}
	ch, p, err = ReadFrame(br, nil)
	if err != nil || ch != 1 || len(p) != 0 {
		t.Fatalf("empty frame: %d %v %v", ch, p, err)
	}
	if _, err := IsFrame(br); !errors.Is(err, io.EOF) {
		t.Fatalf("end: %v", err)
	}
	// Truncated payload.
	short := AppendFrameHeader(nil, 0, 10)
	if _, _, err := ReadFrame(bufio.NewReader(bytes.NewReader(append(short, 1, 2))), buf); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated frame: %v", err)
	}
}

func TestParseTransports(t *testing.T) {
	ts, err := ParseTransports("RTP/AVP/TCP;unicast;interleaved=0-1;mode=record")
	if err != nil {
		t.Fatal(err)
	}
	if !ts[0].TCP || ts[0].Interleaved != [2]int{0, 1} || ts[0].Mode != "record" {
		t.Fatalf("%+v", ts[0])
	}
	ts, err = ParseTransports(`RTP/AVP/UDP;unicast;client_port=5000-5001;mode="RECORD", RTP/AVP/TCP;interleaved=2`)
	if err != nil {
		t.Fatal(err)
	}
	if ts[0].TCP || ts[0].ClientPort != [2]int{5000, 5001} || ts[0].Mode != "record" {
		t.Fatalf("udp: %+v", ts[0])
	}
	if !ts[1].TCP || ts[1].Interleaved != [2]int{2, 3} {
		t.Fatalf("second alternative: %+v", ts[1])
	}
	tr := Transport{Profile: "RTP/AVP", ClientPort: [2]int{5000, 5001}, ServerPort: [2]int{8000, 8001}, Interleaved: [2]int{-1, -1}, SSRC: "0000ABCD"}
	if s := tr.String(); s != "RTP/AVP;unicast;client_port=5000-5001;server_port=8000-8001;ssrc=0000ABCD" {
		t.Fatalf("String = %s", s)
	}
	back, err := ParseTransport(tr.String())
	if err != nil || back.ServerPort != tr.ServerPort || back.ClientPort != tr.ClientPort {
		t.Fatalf("round trip %+v %v", back, err)
	}
	for _, bad := range []string{"", "RAW/RAW/UDP", "RTP/AVP/SCTP", "RTP/AVP;client_port=99999", "RTP/AVP/TCP;interleaved=300-301", "RTP"} {
		if _, err := ParseTransports(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := ParseTransports("RTP/AVP/SCTP"); StatusOf(err) != StatusUnsupportedTransport {
		t.Errorf("unknown lower transport: status %d", StatusOf(err))
	}
}

func TestParseSession(t *testing.T) {
	s, err := ParseSession("12345678;timeout=60")
	if err != nil || s.ID != "12345678" || s.Timeout != 60 || s.String() != "12345678;timeout=60" {
		t.Fatalf("%+v %v", s, err)
	}
	if _, err := ParseSession(";timeout=3"); err == nil {
		t.Fatal("empty id accepted")
	}
}

func TestRTPInfo(t *testing.T) {
	got := FormatRTPInfo([]RTPInfo{{URL: "rtsp://h/x/trackID=0", Seq: 5, RTPTime: 9, HasSeq: true, HasTime: true}, {URL: "rtsp://h/x/trackID=1"}})
	if got != "url=rtsp://h/x/trackID=0;seq=5;rtptime=9,url=rtsp://h/x/trackID=1" {
		t.Fatal(got)
	}
}

func TestAuthorizationBasic(t *testing.T) {
	c, err := ParseAuthorization("Basic dXNlcjpzM2NyZXQ6eA==") // user:s3cret:x
	if err != nil || c.Scheme != "basic" || c.Username != "user" || c.Password != "s3cret:x" {
		t.Fatalf("%+v %v", c, err)
	}
	for _, bad := range []string{"Basic !!", "Basic dXNlcg==", "Bearer x", ""} {
		if _, err := ParseAuthorization(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestDigestRoundTrip(t *testing.T) {
	for _, qop := range []string{"", "auth"} {
		ch := Challenge{Scheme: "digest", Realm: "backchannel", Nonce: "n0nce", QOP: qop, Opaque: "op"}
		h := ch.Authorization(MethodAnnounce, "rtsp://h/x", "kid", `p"ass`, "cn")
		c, err := ParseAuthorization(h)
		if err != nil {
			t.Fatalf("qop %q: %v (%s)", qop, err, h)
		}
		if c.Username != "kid" || c.URI != "rtsp://h/x" || c.Opaque != "op" || c.QOP != qop {
			t.Fatalf("qop %q: parsed %+v", qop, c)
		}
		if !c.VerifyDigest(DigestHA1("kid", "backchannel", `p"ass`), MethodAnnounce) {
			t.Fatalf("qop %q: own response rejected", qop)
		}
		if c.VerifyDigest(DigestHA1("kid", "backchannel", "other"), MethodAnnounce) || c.VerifyDigest(DigestHA1("kid", "backchannel", `p"ass`), MethodSetup) {
			t.Fatalf("qop %q: wrong password or method accepted", qop)
		}
	}
	// ffmpeg's form (RFC 2617 §3.2.2).
	ffmpeg := `Digest username="u", realm="backchannel", nonce="abc", uri="rtsp://127.0.0.1:8554/x", response="` +
		DigestResponse(DigestHA1("u", "backchannel", "pw"), "ANNOUNCE", "rtsp://127.0.0.1:8554/x", "abc", "", "", "") + `"`
	c, err := ParseAuthorization(ffmpeg)
	if err != nil || !c.VerifyDigest(DigestHA1("u", "backchannel", "pw"), "ANNOUNCE") {
		t.Fatalf("ffmpeg digest: %+v %v", c, err)
	}
	for _, bad := range []string{`Digest username="u"`, `Digest username="u, nonce="x`, `Digest username=u, nonce=n, uri=x, response=r, algorithm=SHA-256`} {
		if _, err := ParseAuthorization(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestParseChallenge(t *testing.T) {
	ch, err := ParseChallenge(`Digest realm="cam, 1", nonce="x,y", qop="auth,auth-int", stale=FALSE`)
	if err != nil || ch.Scheme != "digest" || ch.Realm != "cam, 1" || ch.Nonce != "x,y" || ch.QOP != "auth" {
		t.Fatalf("%+v %v", ch, err)
	}
	ch, err = ParseChallenge(`Basic realm="r"`)
	if err != nil || ch.Scheme != "basic" || ch.Realm != "r" {
		t.Fatalf("%+v %v", ch, err)
	}
	if _, err := ParseChallenge(`Digest realm="r"`); err == nil {
		t.Fatal("digest without nonce accepted")
	}
	if _, err := ParseChallenge(`Negotiate x`); err == nil {
		t.Fatal("unknown scheme accepted")
	}
}

// Fuzz tests: parsers never panic, and what they accept survives a round
// trip.

func FuzzReadRequest(f *testing.F) {
	f.Add([]byte(ffmpegAnnounce))
	f.Add([]byte("OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n"))
	f.Add([]byte("SETUP rtsp://127.0.0.1:8554/x?key=abc/streamid=0 RTSP/1.0\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1;mode=record\r\nCSeq: 3\r\n\r\n"))
	f.Add([]byte("PLAY rtsp://h/x RTSP/2.0\r\nContent-Length: 3\r\n\r\nabc"))
	f.Add([]byte("\r\n\r\nX y RTSP/1.0\r\n a\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		br := bufio.NewReader(bytes.NewReader(b))
		for range 8 {
			req, err := ReadRequest(br, Limits{})
			if err != nil {
				if s := StatusOf(err); s < 400 || s > 599 {
					t.Fatalf("status %d for %v", s, err)
				}
				return
			}
			var buf bytes.Buffer
			if err := req.Write(&buf); err != nil {
				t.Fatal(err)
			}
			again, err := ReadRequest(bufio.NewReader(&buf), Limits{MaxHeaderBytes: 1 << 20, MaxHeaders: 1 << 10})
			if err != nil {
				t.Fatalf("re-reading %q: %v", buf.String(), err)
			}
			if again.Method != req.Method || again.RawURL != req.RawURL || !bytes.Equal(again.Body, req.Body) {
				t.Fatalf("round trip changed the request: %+v vs %+v", req, again)
			}
		}
	})
}

func FuzzReadResponse(f *testing.F) {
	f.Add([]byte("RTSP/1.0 200 OK\r\nCSeq: 1\r\nContent-Length: 4\r\n\r\nv=0\n"))
	f.Add([]byte("RTSP/1.0 401 Unauthorized\r\nWWW-Authenticate: Digest realm=\"x\", nonce=\"y\"\r\n\r\n"))
	f.Add([]byte("RTSP/1.0 99 x\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		resp, err := ReadResponse(bufio.NewReader(bytes.NewReader(b)), Limits{})
		if err != nil {
			return
		}
		for _, v := range resp.Header.Values("WWW-Authenticate") {
			_, _ = ParseChallenge(v)
		}
	})
}

// FuzzInterleaved reads a connection's byte stream the way the server
// does: frames and requests in any order.
func FuzzInterleaved(f *testing.F) {
	seed := AppendFrameHeader(nil, 0, 2)
	seed = append(seed, 0x80, 0x60)
	seed = append(seed, "GET_PARAMETER * RTSP/1.0\r\nCSeq: 9\r\n\r\n"...)
	seed = AppendFrameHeader(seed, 3, 4)
	f.Add(seed)
	f.Add([]byte{'$', 0, 0xff, 0xff, 1})
	f.Add([]byte("$\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		br := bufio.NewReader(bytes.NewReader(b))
		buf := make([]byte, MaxFramePayload)
		for range 64 {
			frame, err := IsFrame(br)
			if err != nil {
				return
			}
			if frame {
				_, p, err := ReadFrame(br, buf)
				if err != nil {
					return
				}
				if len(p) > MaxFramePayload {
					t.Fatalf("payload of %d bytes", len(p))
				}
				continue
			}
			if _, err := ReadRequest(br, Limits{}); err != nil {
				return
			}
		}
	})
}

func FuzzTransport(f *testing.F) {
	f.Add("RTP/AVP/TCP;unicast;interleaved=0-1;mode=record")
	f.Add("RTP/AVP;unicast;client_port=5000-5001, RTP/AVP/TCP;interleaved=2-3")
	f.Add("RTP/AVP;multicast;destination=224.1.1.1;ttl=3")
	f.Fuzz(func(t *testing.T, s string) {
		ts, err := ParseTransports(s)
		if err != nil {
			return
		}
		for _, tr := range ts {
			back, err := ParseTransport(tr.String())
			if err != nil {
				t.Fatalf("re-parsing %q: %v", tr.String(), err)
			}
			if back.TCP != tr.TCP || back.ClientPort != tr.ClientPort || back.ServerPort != tr.ServerPort || back.Mode != tr.Mode {
				t.Fatalf("round trip %+v → %q → %+v", tr, tr.String(), back)
			}
		}
	})
}

func FuzzAuthorization(f *testing.F) {
	f.Add(`Digest username="u", realm="r", nonce="n", uri="rtsp://h/x", response="abc", qop=auth, nc=00000001, cnonce="c"`)
	f.Add("Basic dXNlcjpwYXNz")
	f.Add(`Digest username="a\"b", nonce=n, uri=u, response=r`)
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseAuthorization(s)
		if err == nil && c.Scheme == "digest" {
			c.VerifyDigest("00", "ANNOUNCE")
		}
		_, _ = ParseChallenge(s)
		_, _ = ParseSession(s)
	})
}
