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
	if err := me.RegisterDefaultCodecs(); err != nil {
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
	if err := p.negotiate(ctx, endpoint, cfg.bearer); err != nil {
		_ = p.Close()
		return nil, err
	}
	return p, nil
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
