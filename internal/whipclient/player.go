package whipclient

import (
	"context"
	"sync"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// Player is a WHEP session receiving a stream.
type Player struct {
	session
	mu     sync.Mutex
	tracks []*webrtc.TrackRemote
}

// Play offers to receive from a WHEP endpoint (e.g.
// http://host:8080/whep/mystream) and returns once the connection is up.
// Like a browser it offers every codec pion knows (H.264 profiles, VP8,
// VP9, AV1, Opus, …) and lets the server pick. Packets arrive through the
// OnRTP option.
func Play(ctx context.Context, endpoint string, opts ...Option) (*Player, error) {
	cfg := newConfig(opts)
	me := &webrtc.MediaEngine{}
	register := me.RegisterDefaultCodecs
	if cfg.relayCodecs {
		register = func() error { return registerRelayCodecs(me) }
	}
	if err := register(); err != nil {
		return nil, err
	}
	ir := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(me, ir); err != nil {
		return nil, err
	}
	api := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(*cfg.settings))
	pc, err := api.NewPeerConnection(webrtc.Configuration{ICEServers: cfg.iceServers})
	if err != nil {
		return nil, err
	}
	p := &Player{session: session{pc: pc, http: cfg.httpClient, log: cfg.logger, done: make(chan struct{})}}
	recvonly := webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}
	if !cfg.noVideo {
		if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, recvonly); err != nil {
			_ = p.Close()
			return nil, err
		}
	}
	if !cfg.noAudio {
		if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeAudio, recvonly); err != nil {
			_ = p.Close()
			return nil, err
		}
	}
	pc.OnTrack(func(t *webrtc.TrackRemote, r *webrtc.RTPReceiver) {
		p.mu.Lock()
		p.tracks = append(p.tracks, t)
		p.mu.Unlock()
		p.goTracked(func() {
			buf := make([]byte, 1500)
			var pkt rtp.Packet
			for {
				n, _, err := t.Read(buf)
				if err != nil {
					return
				}
				if cfg.onRTP == nil || pkt.Unmarshal(buf[:n]) != nil {
					continue
				}
				cfg.onRTP(t, &pkt)
			}
		})
		p.goTracked(func() {
			readRTCP(func() ([]rtcp.Packet, error) { pkts, _, err := r.ReadRTCP(); return pkts, err },
				func(pkt rtcp.Packet) {
					if cfg.onRTCP != nil {
						cfg.onRTCP(t.Kind(), pkt)
					}
				})
		})
	})
	if err := p.negotiate(ctx, endpoint, cfg.bearer, cfg.header); err != nil {
		_ = p.Close()
		return nil, err
	}
	return p, nil
}

// RequestKeyframe sends a PLI for the received track of the given kind;
// it reports whether there was one to send it for.
func (p *Player) RequestKeyframe(kind webrtc.RTPCodecType) bool {
	for _, t := range p.Tracks() {
		if t.Kind() == kind {
			return p.pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: uint32(t.SSRC())}}) == nil
		}
	}
	return false
}

// relayVideoFeedback is what a relay asks for on video: retransmissions
// and keyframes, as browsers do.
var relayVideoFeedback = []webrtc.RTCPFeedback{{Type: "nack"}, {Type: "nack", Parameter: "pli"}, {Type: "ccm", Parameter: "fir"}}

// aacRates are the sample rates offered for AAC by a relay.
var aacRates = []uint32{48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 96000, 88200, 64000}

// registerRelayCodecs registers what WithRelayCodecs offers. Payload types
// are distinct across kinds.
func registerRelayCodecs(me *webrtc.MediaEngine) error {
	video := []webrtc.RTPCodecParameters{
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
			SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f", RTCPFeedback: relayVideoFeedback}, PayloadType: 96},
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
			SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f", RTCPFeedback: relayVideoFeedback}, PayloadType: 97},
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH265, ClockRate: 90000, RTCPFeedback: relayVideoFeedback}, PayloadType: 98},
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000, RTCPFeedback: relayVideoFeedback}, PayloadType: 99},
	}
	for _, c := range video {
		if err := me.RegisterCodec(c, webrtc.RTPCodecTypeVideo); err != nil {
			return err
		}
	}
	audio := []webrtc.RTPCodecParameters{
		{RTPCodecCapability: Opus, PayloadType: 111},
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypePCMU, ClockRate: 8000}, PayloadType: 0},
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypePCMA, ClockRate: 8000}, PayloadType: 8},
	}
	pt := webrtc.PayloadType(100)
	for _, rate := range aacRates {
		for _, ch := range []uint16{2, 1} {
			audio = append(audio, webrtc.RTPCodecParameters{
				RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: "audio/MPEG4-GENERIC", ClockRate: rate, Channels: ch},
				PayloadType:        pt,
			})
			if pt++; pt == 111 {
				pt++
			}
		}
	}
	for _, c := range audio {
		if err := me.RegisterCodec(c, webrtc.RTPCodecTypeAudio); err != nil {
			return err
		}
	}
	return nil
}

// Tracks are the tracks received so far (a track appears with its first
// packet).
func (p *Player) Tracks() []*webrtc.TrackRemote {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*webrtc.TrackRemote(nil), p.tracks...)
}

// Codec returns the negotiated codec of the player's transceiver of the
// given kind, known as soon as Play returns.
func (p *Player) Codec(kind webrtc.RTPCodecType) (webrtc.RTPCodecParameters, bool) {
	for _, tr := range p.pc.GetTransceivers() {
		if tr.Kind() != kind || tr.Receiver() == nil {
			continue
		}
		codecs := tr.Receiver().GetParameters().Codecs
		if len(codecs) > 0 {
			return codecs[0], true
		}
	}
	return webrtc.RTPCodecParameters{}, false
}
