package rtsp

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"

	"github.com/backchannel/backchannel/ingest/rtsp/wire"
	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/rtc"
)

type sessionMode int

const (
	modePublish sessionMode = iota + 1
	modePlay
)

// session is one RTSP session: a publisher's tracks between SETUP and
// TEARDOWN, or a reader's. Its fields are owned by the connection's
// reading goroutine, except where noted.
type session struct {
	id     string
	srv    *Server
	c      *conn
	stream string
	mode   sessionMode
	log    *slog.Logger

	lastActivity atomic.Int64 // unix nanoseconds
	active       atomic.Bool  // recording or playing
	anyUDP       atomic.Bool
	ended        atomic.Bool
	endOnce      sync.Once

	// Publish.
	announce *announcement
	inputs   []*trackInput // by announced media index; nil if not set up
	channels map[byte]func([]byte)
	routes   []func() // UDP routes to remove
	pub      *media.Publication
	udpPeers [][2]netip.AddrPort // publisher's RTP/RTCP source per set-up input, for keyframe requests
	inputTr  []wire.Transport

	// Play.
	outputs []*readerTrack
}

func newSession(c *conn, stream string, mode sessionMode) *session {
	ss := &session{id: rtc.NewToken()[:16], srv: c.srv, c: c, stream: stream, mode: mode, channels: map[byte]func([]byte){}}
	ss.log = c.log.With("stream", stream, "session", ss.id[:8])
	ss.touch()
	return ss
}

var _ media.Source = (*session)(nil)

func (ss *session) touch() { ss.lastActivity.Store(time.Now().UnixNano()) }

// expired reports whether the client went silent for longer than the
// timeout. Sessions playing over TCP are bound to their connection.
func (ss *session) expired(now time.Time, timeout time.Duration) bool {
	if ss.playingOverTCP() {
		return false
	}
	return now.Sub(time.Unix(0, ss.lastActivity.Load())) > timeout
}

func (ss *session) playingOverTCP() bool {
	return ss.mode == modePlay && ss.active.Load() && !ss.anyUDP.Load()
}

// usedChannel reports whether an interleaved channel is taken.
func (ss *session) usedChannel(ch int) bool {
	_, ok := ss.channels[byte(ch)]
	if ok {
		return true
	}
	for _, o := range ss.outputs {
		if o.tcp && (int(o.channel) == ch || int(o.channel)+1 == ch) {
			return true
		}
	}
	return false
}

// assignChannels fills in interleaved channels the client left out and
// checks those it chose.
func (ss *session) assignChannels(tr *wire.Transport) (int, string) {
	if tr.Interleaved[0] < 0 {
		for ch := 0; ch < 254; ch += 2 {
			if !ss.usedChannel(ch) && !ss.usedChannel(ch+1) {
				tr.Interleaved = [2]int{ch, ch + 1}
				return wire.StatusOK, ""
			}
		}
		return wire.StatusUnsupportedTransport, "no free interleaved channel"
	}
	if tr.Interleaved[1] == tr.Interleaved[0] || ss.usedChannel(tr.Interleaved[0]) || ss.usedChannel(tr.Interleaved[1]) {
		return wire.StatusUnsupportedTransport, "interleaved channels already in use"
	}
	return wire.StatusOK, ""
}

// setupPublish sets up one announced track for RECORD.
func (ss *session) setupPublish(tail string, tr *wire.Transport) (int, string) {
	if ss.active.Load() {
		return wire.StatusMethodNotValidInThisState, "SETUP after RECORD"
	}
	a := ss.announce
	idx := -1
	for i, m := range a.medias {
		if t := tailOf(m.Control); t == tail || (tail == "" && len(a.medias) == 1) {
			idx = i
			break
		}
	}
	if idx < 0 {
		return wire.StatusNotFound, fmt.Sprintf("no announced track has control %q", tail)
	}
	if ss.inputs == nil {
		ss.inputs = make([]*trackInput, len(a.medias))
		ss.udpPeers = make([][2]netip.AddrPort, len(a.medias))
		ss.inputTr = make([]wire.Transport, len(a.medias))
	}
	if ss.inputs[idx] != nil {
		return wire.StatusMethodNotValidInThisState, "track already set up"
	}
	in := newTrackInput(a.medias[idx], ss.srv.metrics)
	if tr.TCP {
		if st, detail := ss.assignChannels(tr); st != wire.StatusOK {
			return st, detail
		}
		ss.channels[byte(tr.Interleaved[0])] = ss.feed(in.writeRTP)
		ss.channels[byte(tr.Interleaved[1])] = ss.feed(in.writeRTCP)
	} else {
		rtpPort, rtcpPort := ss.srv.udp.ports()
		tr.ServerPort = [2]int{rtpPort, rtcpPort}
		ss.udpPeers[idx] = [2]netip.AddrPort{
			netip.AddrPortFrom(ss.c.remote.Addr(), uint16(tr.ClientPort[0])),
			netip.AddrPortFrom(ss.c.remote.Addr(), uint16(tr.ClientPort[1])),
		}
		ss.anyUDP.Store(true)
	}
	tr.Mode = "record"
	ss.inputs[idx] = in
	ss.inputTr[idx] = *tr
	return wire.StatusOK, ""
}

// feed wraps a track input's handler: activity, and the end of the session
// once its publication was taken over.
func (ss *session) feed(h func([]byte) error) func([]byte) {
	return func(b []byte) {
		ss.touch()
		if err := h(b); errors.Is(err, media.ErrReplaced) {
			ss.c.close()
		}
	}
}

// handleFrame routes an interleaved frame (from the reading goroutine).
func (ss *session) handleFrame(ch byte, payload []byte) {
	if h := ss.channels[ch]; h != nil {
		// Inputs keep references to payloads (H.264 reassembly): give
		// each its own buffer.
		h(append([]byte(nil), payload...))
		return
	}
	ss.touch() // RTCP receiver reports from a reader, or anything else
}

// record starts publishing: the stream goes live.
func (ss *session) record() (int, string) {
	if ss.active.Load() {
		return wire.StatusOK, "" // a repeated RECORD changes nothing
	}
	set := chooseInputs(ss.inputs)
	if len(set) == 0 {
		return wire.StatusUnsupportedMediaType, "no supported track was set up"
	}
	a := ss.announce
	if !ss.srv.stillAuthorized(ss.stream, a.keyID, a.key) {
		return wire.StatusUnauthorized, "the stream key was revoked"
	}
	var codecs []media.Codec
	for _, in := range set {
		codecs = append(codecs, in.registryCodec())
	}
	who := media.PublisherInfo{Protocol: media.ProtocolRTSP, Remote: ss.c.nc.RemoteAddr().String(), KeyID: a.keyID}
	pub, err := ss.srv.cfg.Registry.Publish(ss.stream, who, codecs, ss)
	if err != nil {
		return wire.StatusServiceUnavailable, "the registry refused the stream: " + err.Error()
	}
	ss.pub = pub
	for _, in := range set {
		w, _ := pub.Track(in.desc.Kind)
		in.attach(w)
	}
	for i, in := range ss.inputs {
		if in == nil || !ss.udpPeers[i][0].IsValid() {
			continue
		}
		ss.routes = append(ss.routes,
			ss.srv.udp.route(0, ss.udpPeers[i][0], ss.feed(in.writeRTP)),
			ss.srv.udp.route(1, ss.udpPeers[i][1], ss.feed(in.writeRTCP)))
	}
	ss.active.Store(true)
	ss.srv.metrics.sessions.WithLabelValues("setup").Dec()
	ss.srv.metrics.sessions.WithLabelValues("publish").Inc()
	ss.srv.metrics.publishes.Inc()
	var names []string
	for _, in := range set {
		names = append(names, in.desc.Codec.MimeType)
	}
	if pub.TookOver() {
		ss.log.Info("RTSP publisher took the stream over", "codecs", strings.Join(names, ", "), "key", a.keyID)
	} else {
		ss.log.Info("RTSP stream live", "codecs", strings.Join(names, ", "), "key", a.keyID)
	}
	return wire.StatusOK, ""
}

// RequestKeyframe sends the publisher a PLI. Many encoders behind RTSP
// ignore it; those that do not answer sooner than their GOP.
func (ss *session) RequestKeyframe(kind media.Kind) {
	for i, in := range ss.inputs {
		if in == nil || in.desc.Kind != kind {
			continue
		}
		ssrc := in.sourceSSRC()
		if ssrc == 0 {
			continue
		}
		b, err := rtcp.Marshal([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: ssrc}})
		if err != nil {
			return
		}
		tr := ss.inputTr[i]
		if tr.TCP {
			buf := getBuf()
			*buf = wire.AppendFrameHeader(*buf, byte(tr.Interleaved[1]), len(b))
			*buf = append(*buf, b...)
			ss.c.wmu.Lock()
			ss.c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
			_, err := ss.c.bw.Write(*buf)
			if err == nil {
				err = ss.c.bw.Flush()
			}
			ss.c.wmu.Unlock()
			putBuf(buf)
		} else if peer := ss.udpPeers[i][1]; peer.IsValid() {
			_ = ss.srv.udp.send(1, b, peer)
		}
		return
	}
}

// Close is called by the registry: a newer publisher took the stream over,
// or the key was revoked. The connection closes; its goroutine cleans up.
func (ss *session) Close() error {
	ss.log.Info("RTSP publisher ended by the registry (taken over, or key revoked)")
	ss.c.close()
	return nil
}

// setupPlay sets up one track of a live stream for a reader.
func (ss *session) setupPlay(tail string, tr *wire.Transport) (int, string) {
	if ss.active.Load() {
		return wire.StatusMethodNotValidInThisState, "SETUP while playing"
	}
	st, ok := ss.srv.cfg.Registry.Lookup(ss.stream)
	if !ok || !st.Live() {
		return wire.StatusNotFound, "stream " + ss.stream + " is not on air"
	}
	tracks := st.Tracks()
	idx := -1
	switch {
	case strings.HasPrefix(strings.ToLower(tail), "trackid="):
		n, err := strconv.Atoi(tail[len("trackid="):])
		if err == nil && n >= 0 && n < len(tracks) {
			idx = n
		}
	case tail == "" && len(tracks) == 1:
		idx = 0
	}
	if idx < 0 {
		return wire.StatusNotFound, fmt.Sprintf("no track %q in stream %s", tail, ss.stream)
	}
	t := tracks[idx]
	for _, o := range ss.outputs {
		if o.track == t {
			return wire.StatusMethodNotValidInThisState, "track already set up"
		}
	}
	out := &readerTrack{sess: ss, track: t, index: idx, pt: payloadTypeFor(t.Codec()), tcp: tr.TCP}
	if tr.TCP {
		if st, detail := ss.assignChannels(tr); st != wire.StatusOK {
			return st, detail
		}
		out.channel = byte(tr.Interleaved[0])
	} else {
		rtpPort, rtcpPort := ss.srv.udp.ports()
		tr.ServerPort = [2]int{rtpPort, rtcpPort}
		out.udpRTP = netip.AddrPortFrom(ss.c.remote.Addr(), uint16(tr.ClientPort[0]))
		out.udpRTCP = netip.AddrPortFrom(ss.c.remote.Addr(), uint16(tr.ClientPort[1]))
		ss.anyUDP.Store(true)
	}
	tr.SSRC = fmt.Sprintf("%08X", t.SSRC())
	tr.Mode = ""
	ss.outputs = append(ss.outputs, out)
	return wire.StatusOK, ""
}

// play attaches the reader's tracks to the stream. base is the stream's
// URL as the reader addresses it, for RTP-Info.
func (ss *session) play(base string) ([]wire.RTPInfo, int, string) {
	if len(ss.outputs) == 0 {
		return nil, wire.StatusMethodNotValidInThisState, "SETUP a track before PLAY"
	}
	if ss.active.Load() {
		return nil, wire.StatusOK, ""
	}
	for _, o := range ss.outputs {
		if o.tcp {
			ss.c.startWriter()
		} else {
			// Receiver reports keep a UDP reader's session alive.
			ss.routes = append(ss.routes, ss.srv.udp.route(1, o.udpRTCP, func([]byte) { ss.touch() }))
		}
	}
	var infos []wire.RTPInfo
	for i, o := range ss.outputs {
		if err := o.start(); err != nil {
			for _, p := range ss.outputs[:i] {
				p.stop()
			}
			return nil, wire.StatusNotFound, "stream " + ss.stream + " ended"
		}
		infos = append(infos, wire.RTPInfo{URL: base + "/trackID=" + strconv.Itoa(o.index)})
	}
	ss.active.Store(true)
	ss.srv.metrics.sessions.WithLabelValues("setup").Dec()
	ss.srv.metrics.sessions.WithLabelValues("play").Inc()
	ss.srv.metrics.plays.Inc()
	ss.log.Info("RTSP reader playing", "tracks", len(ss.outputs), "udp", ss.anyUDP.Load())
	return infos, wire.StatusOK, ""
}

func (ss *session) pause() {
	if !ss.active.Load() {
		return
	}
	for _, o := range ss.outputs {
		o.stop()
	}
	ss.active.Store(false)
	ss.srv.metrics.sessions.WithLabelValues("play").Dec()
	ss.srv.metrics.sessions.WithLabelValues("setup").Inc()
}

// end releases everything the session holds (from the reading goroutine).
func (ss *session) end(reason string) {
	ss.endOnce.Do(func() {
		ss.ended.Store(true)
		for _, r := range ss.routes {
			r()
		}
		for _, o := range ss.outputs {
			o.stop()
		}
		mode := "setup"
		if ss.active.Load() {
			mode = "publish"
			if ss.mode == modePlay {
				mode = "play"
			}
		}
		ss.srv.metrics.sessions.WithLabelValues(mode).Dec()
		if ss.pub != nil {
			ss.pub.Close() // offline now, unless a newer publisher owns the stream
		}
		ss.srv.removeSession(ss)
		ss.log.Info("RTSP session ended", "reason", reason)
	})
}
