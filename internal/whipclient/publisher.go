package whipclient

import (
	"context"
	"errors"
	"fmt"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
	pionmedia "github.com/pion/webrtc/v4/pkg/media"
)

// Publisher is a WHIP session sending one video and/or one audio track.
type Publisher struct {
	session
	video *webrtc.TrackLocalStaticSample
	audio *webrtc.TrackLocalStaticSample
}

// Publish offers to publish to a WHIP endpoint (e.g.
// http://host:8080/whip/mystream) with the given stream key and returns
// once the connection is up. Samples written to the tracks are packetized
// by pion; their durations drive the RTP timestamps. The server puts the
// stream on air when it sees the connection up, which can be a moment
// after Publish returns.
func Publish(ctx context.Context, endpoint, bearerKey string, opts ...Option) (*Publisher, error) {
	cfg := newConfig(opts)
	if cfg.noVideo && cfg.noAudio {
		return nil, errors.New("whipclient: nothing to publish")
	}
	videoCodec, audioCodec := H264, Opus
	if cfg.video != nil {
		videoCodec = *cfg.video
	}
	if cfg.audio != nil {
		audioCodec = *cfg.audio
	}

	me := &webrtc.MediaEngine{}
	if !cfg.noVideo {
		if err := me.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: videoCodec, PayloadType: 102}, webrtc.RTPCodecTypeVideo); err != nil {
			return nil, err
		}
	}
	if !cfg.noAudio {
		if err := me.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: audioCodec, PayloadType: 111}, webrtc.RTPCodecTypeAudio); err != nil {
			return nil, err
		}
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
	p := &Publisher{session: session{pc: pc, http: cfg.httpClient, log: cfg.logger, done: make(chan struct{})}}

	addTrack := func(c webrtc.RTPCodecCapability, id string) (*webrtc.TrackLocalStaticSample, error) {
		t, err := webrtc.NewTrackLocalStaticSample(c, id, "backchannel")
		if err != nil {
			return nil, err
		}
		tr, err := pc.AddTransceiverFromTrack(t, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
		if err != nil {
			return nil, err
		}
		kind := tr.Kind()
		sender := tr.Sender()
		p.goTracked(func() {
			readRTCP(func() ([]rtcp.Packet, error) { pkts, _, err := sender.ReadRTCP(); return pkts, err },
				func(pkt rtcp.Packet) {
					switch pkt.(type) {
					case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
						if cfg.onKeyframeReq != nil {
							cfg.onKeyframeReq()
						}
					}
					if cfg.onRTCP != nil {
						cfg.onRTCP(kind, pkt)
					}
				})
		})
		return t, nil
	}
	if !cfg.noVideo {
		if p.video, err = addTrack(videoCodec, "video"); err != nil {
			_ = p.Close()
			return nil, err
		}
	}
	if !cfg.noAudio {
		if p.audio, err = addTrack(audioCodec, "audio"); err != nil {
			_ = p.Close()
			return nil, err
		}
	}
	if err := p.negotiate(ctx, endpoint, bearerKey, cfg.header); err != nil {
		_ = p.Close()
		return nil, err
	}
	return p, nil
}

// VideoTrack is the published video track (nil WithoutVideo).
func (p *Publisher) VideoTrack() *webrtc.TrackLocalStaticSample { return p.video }

// AudioTrack is the published audio track (nil WithoutAudio).
func (p *Publisher) AudioTrack() *webrtc.TrackLocalStaticSample { return p.audio }

// WriteVideo sends one video frame (for H.264 an access unit in Annex-B
// form) lasting s.Duration.
func (p *Publisher) WriteVideo(s pionmedia.Sample) error {
	if p.video == nil {
		return fmt.Errorf("whipclient: no video track")
	}
	return p.video.WriteSample(s)
}

// WriteAudio sends one audio frame (one Opus packet) lasting s.Duration.
func (p *Publisher) WriteAudio(s pionmedia.Sample) error {
	if p.audio == nil {
		return fmt.Errorf("whipclient: no audio track")
	}
	return p.audio.WriteSample(s)
}
