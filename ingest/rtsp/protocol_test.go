package rtsp_test

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/backchannel/backchannel/ingest/rtsp"
	"github.com/backchannel/backchannel/ingest/rtsp/wire"
	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/whipclient/whiptest"
)

// rawClient speaks RTSP by hand, to send what real clients would not.
type rawClient struct {
	t    testing.TB
	nc   net.Conn
	br   *bufio.Reader
	cseq int
}

func dialRaw(t testing.TB, n *node) *rawClient {
	t.Helper()
	nc, err := net.Dial("tcp", n.RTSP.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rawClient{t: t, nc: nc, br: bufio.NewReader(nc)}
}

func (c *rawClient) do(method, url string, headers map[string]string, body string) *wire.Response {
	c.t.Helper()
	c.cseq++
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s RTSP/1.0\r\nCSeq: %d\r\n", method, url, c.cseq)
	for k, v := range headers {
		fmt.Fprintf(&b, "%s: %s\r\n", k, v)
	}
	if body != "" {
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(body))
	}
	b.WriteString("\r\n" + body)
	c.nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.nc.Write([]byte(b.String())); err != nil {
		c.t.Fatal(err)
	}
	for {
		frame, err := wire.IsFrame(c.br)
		if err != nil {
			c.t.Fatalf("%s: %v", method, err)
		}
		if !frame {
			break
		}
		if _, _, err := wire.ReadFrame(c.br, nil); err != nil {
			c.t.Fatal(err)
		}
	}
	resp, err := wire.ReadResponse(c.br, wire.Limits{})
	if err != nil {
		c.t.Fatalf("%s: %v", method, err)
	}
	if resp.Header.Get("CSeq") != fmt.Sprint(c.cseq) {
		c.t.Fatalf("%s: CSeq %q, want %d", method, resp.Header.Get("CSeq"), c.cseq)
	}
	return resp
}

func wantStatus(t testing.TB, what string, resp *wire.Response, status int) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("%s: %d %s (%s), want %d", what, resp.StatusCode, resp.Reason, resp.Body, status)
	}
}

// TestProtocolStatuses: each kind of bad request gets its RTSP status, on
// a connection that stays usable.
func TestProtocolStatuses(t *testing.T) {
	n := startNode(t, nodeOptions{rtsp: rtsp.Config{MaxSessions: 1}})
	c := dialRaw(t, n)
	base := n.rtspURL("s", "")

	resp := c.do("OPTIONS", base, nil, "")
	wantStatus(t, "OPTIONS", resp, 200)
	for _, m := range []string{"ANNOUNCE", "RECORD", "DESCRIBE", "PLAY", "GET_PARAMETER", "TEARDOWN"} {
		if !strings.Contains(resp.Header.Get("Public"), m) {
			t.Errorf("Public lacks %s: %q", m, resp.Header.Get("Public"))
		}
	}
	wantStatus(t, "GET_PARAMETER keepalive", c.do("GET_PARAMETER", base, nil, ""), 200)
	wantStatus(t, "DESCRIBE offline", c.do("DESCRIBE", base, nil, ""), 404)
	wantStatus(t, "DESCRIBE bad name", c.do("DESCRIBE", n.rtspURL("bad%20name!", ""), nil, ""), 400)
	wantStatus(t, "unknown method", c.do("FLY", base, nil, ""), 501)
	wantStatus(t, "RECORD before SETUP", c.do("RECORD", base, nil, ""), 455)
	wantStatus(t, "PLAY before SETUP", c.do("PLAY", base, nil, ""), 455)
	wantStatus(t, "unknown session", c.do("PLAY", base, map[string]string{"Session": "nope"}, ""), 454)

	// ANNOUNCE: no key, wrong key, unsupported media, then a good one.
	sdp := strings.ReplaceAll(ffmpegSDPForTests, "\n", "\r\n")
	resp = c.do("ANNOUNCE", base, map[string]string{"Content-Type": "application/sdp"}, sdp)
	wantStatus(t, "ANNOUNCE without key", resp, 401)
	if ch := resp.Header.Values("WWW-Authenticate"); len(ch) != 2 || !strings.HasPrefix(ch[0], "Digest ") || !strings.HasPrefix(ch[1], "Basic ") {
		t.Fatalf("challenges %q", ch)
	}
	wantStatus(t, "ANNOUNCE wrong key", c.do("ANNOUNCE", base+"?key=nope", map[string]string{"Content-Type": "application/sdp"}, sdp), 401)
	vp9 := strings.NewReplacer("H264/90000", "VP9/90000", "opus/48000/2", "L16/44100/2").Replace(sdp)
	wantStatus(t, "ANNOUNCE unsupported", c.do("ANNOUNCE", base+"?key="+whiptest.Key, map[string]string{"Content-Type": "application/sdp"}, vp9), 415)
	wantStatus(t, "ANNOUNCE not SDP", c.do("ANNOUNCE", base+"?key="+whiptest.Key, map[string]string{"Content-Type": "text/plain"}, sdp), 415)
	wantStatus(t, "ANNOUNCE bad SDP", c.do("ANNOUNCE", base+"?key="+whiptest.Key, map[string]string{"Content-Type": "application/sdp"}, "v=0\r\nnonsense\r\n"), 400)
	wantStatus(t, "ANNOUNCE", c.do("ANNOUNCE", base+"?key="+whiptest.Key, map[string]string{"Content-Type": "application/sdp"}, sdp), 200)

	// SETUP: unsupported transports, unknown track, then a good one.
	wantStatus(t, "SETUP multicast", c.do("SETUP", base+"/streamid=0", map[string]string{"Transport": "RTP/AVP;multicast;mode=record"}, ""), 461)
	wantStatus(t, "SETUP raw", c.do("SETUP", base+"/streamid=0", map[string]string{"Transport": "RAW/RAW/UDP;unicast"}, ""), 461)
	wantStatus(t, "SETUP no transport", c.do("SETUP", base+"/streamid=0", nil, ""), 461)
	wantStatus(t, "SETUP unknown track", c.do("SETUP", base+"/streamid=7", map[string]string{"Transport": "RTP/AVP/TCP;unicast;interleaved=0-1;mode=record"}, ""), 404)
	resp = c.do("SETUP", base+"/streamid=0", map[string]string{"Transport": "RTP/AVP/TCP;unicast;interleaved=0-1;mode=record"}, "")
	wantStatus(t, "SETUP", resp, 200)
	sess, err := wire.ParseSession(resp.Header.Get("Session"))
	if err != nil || sess.Timeout != 60 {
		t.Fatalf("Session %q", resp.Header.Get("Session"))
	}
	if tr := resp.Header.Get("Transport"); !strings.Contains(tr, "interleaved=0-1") {
		t.Fatalf("Transport %q", tr)
	}
	wantStatus(t, "SETUP same channels", c.do("SETUP", base+"/streamid=1", map[string]string{"Transport": "RTP/AVP/TCP;unicast;interleaved=0-1;mode=record", "Session": sess.ID}, ""), 461)
	wantStatus(t, "PLAY in a publish session", c.do("PLAY", base, map[string]string{"Session": sess.ID}, ""), 455)

	// A second connection finds the server at its session limit.
	c2 := dialRaw(t, n)
	wantStatus(t, "ANNOUNCE on a second connection", c2.do("ANNOUNCE", n.rtspURL("t", "key="+whiptest.Key), map[string]string{"Content-Type": "application/sdp"}, sdp), 200)
	wantStatus(t, "SETUP over the session limit", c2.do("SETUP", n.rtspURL("t", "")+"/streamid=0", map[string]string{"Transport": "RTP/AVP/TCP;unicast;interleaved=0-1;mode=record"}, ""), 453)

	wantStatus(t, "RECORD", c.do("RECORD", base, map[string]string{"Session": sess.ID, "Range": "npt=0.000-"}, ""), 200)
	n.waitLive(t, "s", 5*time.Second)
	wantStatus(t, "TEARDOWN", c.do("TEARDOWN", base, map[string]string{"Session": sess.ID}, ""), 200)
	deadline := time.Now().Add(2 * time.Second)
	for len(n.Registry.List()) != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if len(n.Registry.List()) != 0 {
		t.Fatal("stream live after TEARDOWN")
	}
	// The connection is still usable.
	wantStatus(t, "OPTIONS after TEARDOWN", c.do("OPTIONS", base, nil, ""), 200)

	// RTSP 2.0 gets 505, in sync.
	resp = c.doRaw("OPTIONS * RTSP/2.0\r\nCSeq: 99\r\n\r\n")
	if resp.StatusCode != 505 || resp.Header.Get("CSeq") != "99" {
		t.Fatalf("RTSP/2.0: %d CSeq %q", resp.StatusCode, resp.Header.Get("CSeq"))
	}
	if got := counterValue(t, n.RTSPMetrics, "backchannel_rtsp_rejections_total", "auth"); got != 2 {
		t.Errorf("auth rejections %v, want 2", got)
	}
}

// ffmpegSDPForTests is H.264 + Opus as ffmpeg announces them.
const ffmpegSDPForTests = `v=0
o=- 0 0 IN IP4 127.0.0.1
s=No Name
c=IN IP4 127.0.0.1
t=0 0
a=tool:libavformat 59.27.100
m=video 0 RTP/AVP 96
a=rtpmap:96 H264/90000
a=fmtp:96 packetization-mode=1; sprop-parameter-sets=Z0LAHtoCgL/lwEQAAAMABAAAAwDIPFi6gA==,aM4PyA==; profile-level-id=42C01E
a=control:streamid=0
m=audio 0 RTP/AVP 97
a=rtpmap:97 opus/48000/2
a=control:streamid=1
`

func (c *rawClient) doRaw(s string) *wire.Response {
	c.t.Helper()
	c.nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.nc.Write([]byte(s)); err != nil {
		c.t.Fatal(err)
	}
	resp, err := wire.ReadResponse(c.br, wire.Limits{})
	if err != nil {
		c.t.Fatal(err)
	}
	return resp
}

func counterValue(t testing.TB, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := label == ""
			for _, lp := range m.GetLabel() {
				if lp.GetValue() == label {
					match = true
				}
			}
			if !match {
				continue
			}
			if m.Counter != nil {
				sum += m.Counter.GetValue()
			} else if m.Gauge != nil {
				sum += m.Gauge.GetValue()
			}
		}
	}
	return sum
}

// TestSessionTimeout: a session whose client goes silent is ended, and
// its stream with it.
func TestSessionTimeout(t *testing.T) {
	n := startNode(t, nodeOptions{rtsp: rtsp.Config{SessionTimeout: time.Second}})
	c := dialRaw(t, n)
	base := n.rtspURL("s", "key="+whiptest.Key)
	sdp := strings.ReplaceAll(ffmpegSDPForTests, "\n", "\r\n")
	wantStatus(t, "ANNOUNCE", c.do("ANNOUNCE", base, map[string]string{"Content-Type": "application/sdp"}, sdp), 200)
	resp := c.do("SETUP", n.rtspURL("s", "")+"/streamid=0", map[string]string{"Transport": "RTP/AVP;unicast;client_port=40000-40001;mode=record"}, "")
	wantStatus(t, "SETUP UDP", resp, 200)
	tr, err := wire.ParseTransport(resp.Header.Get("Transport"))
	if err != nil {
		t.Fatal(err)
	}
	rtpPort, rtcpPort := n.RTSP.UDPPorts()
	if tr.ServerPort != [2]int{rtpPort, rtcpPort} || rtpPort%2 != 0 || rtcpPort != rtpPort+1 {
		t.Fatalf("server ports %v, server has %d-%d", tr.ServerPort, rtpPort, rtcpPort)
	}
	sess, _ := wire.ParseSession(resp.Header.Get("Session"))
	wantStatus(t, "RECORD", c.do("RECORD", base, map[string]string{"Session": sess.ID}, ""), 200)
	n.waitLive(t, "s", 5*time.Second)
	// No RTP ever comes: within the timeout and a janitor tick, it ends.
	deadline := time.Now().Add(5 * time.Second)
	for n.RTSP.Sessions() != 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n.RTSP.Sessions() != 0 {
		t.Fatal("silent session not timed out")
	}
	if st, ok := n.Registry.Lookup("s"); ok && st.Live() {
		t.Fatal("stream of a timed-out session still live")
	}
}

// TestDescribeOnlyListsLiveStreams: a stream in its offline grace is not
// served to new readers.
func TestDescribeOnlyListsLiveStreams(t *testing.T) {
	n := startNode(t, nodeOptions{})
	pub, err := n.Registry.Publish("gone", media.PublisherInfo{}, []media.Codec{{MimeType: media.MimeOpus, ClockRate: 48000, Channels: 2}}, nopSource{})
	if err != nil {
		t.Fatal(err)
	}
	c := dialRaw(t, n)
	resp := c.do("DESCRIBE", n.rtspURL("gone", ""), nil, "")
	wantStatus(t, "DESCRIBE live", resp, 200)
	if resp.Header.Get("Content-Type") != "application/sdp" || !strings.HasSuffix(resp.Header.Get("Content-Base"), "/gone/") ||
		!strings.Contains(string(resp.Body), "a=rtpmap:97 opus/48000/2") {
		t.Fatalf("DESCRIBE answer %+v\n%s", resp.Header, resp.Body)
	}
	pub.Close()
	wantStatus(t, "DESCRIBE offline", c.do("DESCRIBE", n.rtspURL("gone", ""), nil, ""), 404)
}

type nopSource struct{}

func (nopSource) RequestKeyframe(media.Kind) {}
func (nopSource) Close() error               { return nil }

// TestUDPPublishNeedsNoKeepalive: a UDP publisher that sends RTP but no
// RTSP request (ffmpeg does not) stays on air past the session timeout; it
// times out once its RTP stops.
func TestUDPPublishNeedsNoKeepalive(t *testing.T) {
	n := startNode(t, nodeOptions{rtsp: rtsp.Config{SessionTimeout: time.Second}})
	rtpConn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer rtpConn.Close()
	port := rtpConn.LocalAddr().(*net.UDPAddr).Port
	c := dialRaw(t, n)
	wantStatus(t, "ANNOUNCE", c.do("ANNOUNCE", n.rtspURL("u", "key="+whiptest.Key), map[string]string{"Content-Type": "application/sdp"}, opusSDP), 200)
	resp := c.do("SETUP", n.rtspURL("u", "")+"/streamid=0", map[string]string{"Transport": fmt.Sprintf("RTP/AVP;unicast;client_port=%d-%d;mode=record", port, port+1)}, "")
	wantStatus(t, "SETUP", resp, 200)
	sess, _ := wire.ParseSession(resp.Header.Get("Session"))
	wantStatus(t, "RECORD", c.do("RECORD", n.rtspURL("u", ""), map[string]string{"Session": sess.ID}, ""), 200)
	n.waitLive(t, "u", 5*time.Second)
	sink := attachSink(t, n, "u", media.KindAudio)
	rtpPort, _ := n.RTSP.UDPPorts()
	to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: rtpPort}
	for i := range 150 { // 3 s at 50 packets/s
		b, _ := opusPacket(i).Marshal()
		if _, err := rtpConn.WriteToUDP(b, to); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n.RTSP.Sessions() != 1 || len(n.Registry.List()) != 1 {
		t.Fatal("a UDP publisher sending RTP timed out")
	}
	if got := sink.count(); got < 140 {
		t.Fatalf("%d of 150 UDP packets reached the stream", got)
	}
	waitFor(t, 5*time.Second, "the silent session to time out", func() bool { return n.RTSP.Sessions() == 0 })
}
