// Package demo is the built-in demo broadcast: a short embedded clip
// (H.264 video, Opus audio) published over the real WHIP path and looped
// forever with continuous timestamps, so a newcomer running the server
// sees and hears something at once. See README.md for how the clip was
// made.
package demo

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	pionmedia "github.com/pion/webrtc/v4/pkg/media"
	"github.com/pion/webrtc/v4/pkg/media/h264reader"
	"github.com/pion/webrtc/v4/pkg/media/oggreader"

	"github.com/backchannel/backchannel/internal/whipclient"
)

var (
	//go:embed clip.h264
	clipH264 []byte
	//go:embed clip.ogg
	clipOgg []byte
)

// The clip's timing: 30 frames per second, 20 ms Opus packets.
const (
	FrameRate     = 30
	audioDuration = 20 * time.Millisecond
)

// Clip is the demo content, split into what one WHIP sample carries.
type Clip struct {
	Frames [][]byte // H.264 access units in Annex-B form; Frames[0] is a keyframe
	Audio  [][]byte // Opus packets of 20 ms, as many as the video lasts
}

// Duration is the length of one loop.
func (c *Clip) Duration() time.Duration {
	return time.Duration(len(c.Frames)) * time.Second / FrameRate
}

// LoadClip parses the embedded clip (once).
var LoadClip = sync.OnceValues(func() (*Clip, error) { return parseClip(clipH264, clipOgg) })

var annexBStart = []byte{0, 0, 0, 1}

func parseClip(h264, ogg []byte) (*Clip, error) {
	c := &Clip{}
	r, err := h264reader.NewReader(bytes.NewReader(h264))
	if err != nil {
		return nil, fmt.Errorf("demo: video: %w", err)
	}
	var frame []byte
	for {
		nal, err := r.NextNAL()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("demo: video: %w", err)
		}
		switch nal.UnitType {
		case h264reader.NalUnitTypeAUD, h264reader.NalUnitTypeFiller:
			continue // pion's packetizer drops them anyway
		}
		frame = append(frame, annexBStart...)
		frame = append(frame, nal.Data...)
		// One slice per picture (the clip is encoded that way): a coded
		// slice ends the access unit.
		if nal.UnitType == h264reader.NalUnitTypeCodedSliceIdr || nal.UnitType == h264reader.NalUnitTypeCodedSliceNonIdr {
			c.Frames = append(c.Frames, frame)
			frame = nil
		}
	}
	if len(c.Frames) == 0 || !bytes.Contains(c.Frames[0][:min(len(c.Frames[0]), 64)], []byte{0, 0, 0, 1, 0x67}) {
		return nil, errors.New("demo: video must start with SPS and an IDR frame")
	}

	o, _, err := oggreader.NewWith(bytes.NewReader(ogg))
	if err != nil {
		return nil, fmt.Errorf("demo: audio: %w", err)
	}
	var lastGranule uint64
	for {
		page, hdr, err := o.ParseNextPage()
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("demo: audio: %w", err)
		}
		if bytes.HasPrefix(page, []byte("OpusTags")) {
			continue
		}
		// The clip has one 20 ms packet per page (ffmpeg -page_duration
		// 20000), so a page's payload is exactly one Opus packet.
		if lastGranule != 0 {
			n := hdr.GranulePosition - lastGranule
			if n > 960 {
				return nil, fmt.Errorf("demo: audio page holds %d samples, want one 20 ms packet per page", n)
			}
			if n < 960 {
				break // the encoder's end trimming: the last packet
			}
		}
		lastGranule = hdr.GranulePosition
		c.Audio = append(c.Audio, page)
	}
	// Loop audio and video over the same span so they stay in sync.
	want := int(c.Duration() / audioDuration)
	if len(c.Audio) < want {
		return nil, fmt.Errorf("demo: %d audio packets for %v of video", len(c.Audio), c.Duration())
	}
	c.Audio = c.Audio[:want]
	return c, nil
}

// Run publishes the demo clip to a WHIP endpoint with the given key, in a
// loop, until ctx ends (then it returns nil). If the session fails it
// publishes again, backing off from 0.5 s to 10 s between attempts. It
// returns an error only if the embedded clip is unusable.
func Run(ctx context.Context, whipURL, key string, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "demo")
	clip, err := LoadClip()
	if err != nil {
		return err
	}
	const minBackoff, maxBackoff = 500 * time.Millisecond, 10 * time.Second
	backoff := minBackoff
	wait := func() {
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, maxBackoff)
	}
	for ctx.Err() == nil {
		pub, err := whipclient.Publish(ctx, whipURL, key, whipclient.WithLogger(logger))
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			logger.Warn("demo publish failed; retrying", "err", err, "in", backoff)
			wait()
			continue
		}
		logger.Info("demo broadcast on air", "url", whipURL)
		began := time.Now()
		err = Stream(ctx, pub, clip)
		_ = pub.Close()
		if ctx.Err() != nil {
			break
		}
		// A session that held for a while resets the backoff; one dropped
		// at once (say, another publisher keeps taking the stream over)
		// makes the demo retry ever more slowly instead of fighting.
		if time.Since(began) > stableSession {
			backoff = minBackoff
		}
		logger.Warn("demo session dropped; publishing again", "err", err, "in", backoff)
		wait()
	}
	return nil
}

// stableSession is how long a session must last to count as healthy.
const stableSession = 30 * time.Second

// maxLag is how far behind its schedule the pacer may fall (a stalled
// process) before it skips ahead instead of bursting to catch up.
const maxLag = time.Second

// Stream sends the clip to pub in a loop, paced in real time (one frame
// every 1/30 s, one audio packet every 20 ms, on one absolute schedule so
// nothing drifts), until ctx ends or the session closes. Sample durations
// drive the RTP timestamps, so they run on across the loop point.
func Stream(ctx context.Context, pub *whipclient.Publisher, clip *Clip) error {
	start := time.Now()
	var videoN, audioN int64
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for {
		videoAt := start.Add(time.Duration(videoN) * time.Second / FrameRate)
		audioAt := start.Add(time.Duration(audioN) * audioDuration)
		next := min(videoAt.UnixNano(), audioAt.UnixNano())
		if wait := time.Until(time.Unix(0, next)); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-pub.Done():
				return errors.New("demo: session closed")
			case <-timer.C:
			}
		} else if wait < -maxLag {
			start = start.Add(-wait) // behind: drop the backlog, keep the cadence
			continue
		}
		var err error
		if videoAt.UnixNano() <= audioAt.UnixNano() {
			err = pub.WriteVideo(pionmedia.Sample{Data: clip.Frames[videoN%int64(len(clip.Frames))], Duration: time.Second / FrameRate})
			videoN++
		} else {
			err = pub.WriteAudio(pionmedia.Sample{Data: clip.Audio[audioN%int64(len(clip.Audio))], Duration: audioDuration})
			audioN++
		}
		if err != nil {
			return err
		}
	}
}
