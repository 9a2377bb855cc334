package hls_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	pionmedia "github.com/pion/webrtc/v4/pkg/media"

	"github.com/backchannel/backchannel/edge/hls"
	"github.com/backchannel/backchannel/internal/codec/h264"
	"github.com/backchannel/backchannel/internal/demo"
	"github.com/backchannel/backchannel/internal/fmp4"
	"github.com/backchannel/backchannel/internal/whipclient"
	"github.com/backchannel/backchannel/internal/whipclient/whiptest"
)

// seiUUID marks the SEI (user data unregistered) that carries a frame's
// index through WHIP, the packager and the part, so the benchmark can tell
// which frames a part holds.
var seiUUID = []byte("backchannel-fidx")

func frameWithIndex(frame []byte, idx int) []byte {
	digits := fmt.Sprintf("F%08d", idx) // no zero bytes: no emulation prevention needed
	sei := []byte{0, 0, 0, 1, byte(h264.NALUTypeSEI), 5, byte(len(seiUUID) + len(digits))}
	sei = append(sei, seiUUID...)
	sei = append(sei, digits...)
	sei = append(sei, 0x80)
	return append(sei, frame...)
}

// frameIndexes returns the indexes tagged in a part's video samples.
func frameIndexes(part []byte, defaults map[uint32]fmp4.TrackDefaults) ([]int, error) {
	frags, err := fmp4.ParseFragments(part, defaults)
	if err != nil {
		return nil, err
	}
	var out []int
	for _, f := range frags {
		for _, tf := range f.Tracks {
			for _, s := range tf.Samples {
				nalus, err := h264.SplitAVCC(s.Data, 1024)
				if err != nil {
					continue
				}
				for _, n := range nalus {
					if h264.TypeOf(n) == h264.NALUTypeSEI && len(n) > 3+len(seiUUID)+9 && bytes.Equal(n[3:3+len(seiUUID)], seiUUID) {
						d := n[3+len(seiUUID)+1 : 3+len(seiUUID)+9]
						if i, err := strconv.Atoi(string(d)); err == nil {
							out = append(out, i)
						}
					}
				}
			}
		}
	}
	return out, nil
}

var mapRE = regexp.MustCompile(`#EXT-X-MAP:URI="([^"]+)"`)

// BenchmarkLLHLSLatency measures, for every frame a WHIP publisher sends
// on loopback, the time from its send to the first blocking playlist
// response that lists the part holding it: what an LL-HLS player waiting
// on _HLS_msn/_HLS_part sees. It reports p50 and p99 against the part
// target (200 ms); the target is p99 ≤ part + 100 ms.
//
//	go test -run '^$' -bench LLHLS ./edge/hls/
func BenchmarkLLHLSLatency(b *testing.B) {
	const measure = 12 * time.Second
	srv := whiptest.Start(b, whiptest.Options{})
	h, err := hls.New(hls.Config{Registry: srv.Registry})
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	mux := http.NewServeMux()
	mux.Handle("/hls/", h.Handler())
	web := httptest.NewServer(mux)
	defer web.Close()

	clip, err := demo.LoadClip()
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pub, err := whipclient.Publish(ctx, srv.WHIP("bench"), whiptest.Key, whipclient.WithoutAudio())
	if err != nil {
		b.Fatal(err)
	}
	defer pub.Close()
	srv.WaitLive(b, "bench")

	var mu sync.Mutex
	sent := map[int]time.Time{}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		const frame = time.Second / demo.FrameRate
		start := time.Now()
		for i := 0; ; i++ {
			if d := time.Until(start.Add(time.Duration(i) * frame)); d > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(d):
				}
			}
			data := frameWithIndex(clip.Frames[i%len(clip.Frames)], i)
			mu.Lock()
			sent[i] = time.Now()
			mu.Unlock()
			if err := pub.WriteVideo(pionmedia.Sample{Data: data, Duration: frame}); err != nil {
				return
			}
		}
	}()
	defer wg.Wait()
	defer cancel()

	get := func(url string) (string, time.Time) {
		res, err := http.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		at := time.Now()
		if res.StatusCode != 200 {
			b.Fatalf("GET %s: %d %s", url, res.StatusCode, body)
		}
		return string(body), at
	}
	base := web.URL + "/hls/bench/"
	playlist, _ := get(base + "media.m3u8")
	initBody, _ := get(base + mapRE.FindStringSubmatch(playlist)[1])
	tracks, err := fmp4.ParseInit([]byte(initBody))
	if err != nil {
		b.Fatal(err)
	}
	defaults := fmp4.Defaults(tracks)

	seen := map[string]bool{}
	for _, p := range parts(playlist) {
		seen[p.uri] = true // listed before measuring
	}
	var lat []time.Duration
	var partDur []float64
	b.ResetTimer()
	end := time.Now().Add(measure)
	for time.Now().Before(end) {
		hint := hintRE.FindStringSubmatch(playlist)
		body, at := get(fmt.Sprintf("%smedia.m3u8?_HLS_msn=%s&_HLS_part=%s", base, hint[2], hint[3]))
		playlist = body
		for _, p := range parts(body) {
			if seen[p.uri] {
				continue
			}
			seen[p.uri] = true
			partDur = append(partDur, p.duration)
			data, _ := get(base + p.uri)
			idx, err := frameIndexes([]byte(data), defaults)
			if err != nil {
				b.Fatal(err)
			}
			mu.Lock()
			for _, i := range idx {
				if t, ok := sent[i]; ok {
					lat = append(lat, at.Sub(t))
				}
			}
			mu.Unlock()
		}
	}
	b.StopTimer()
	if len(lat) < 100 {
		b.Fatalf("only %d frames measured", len(lat))
	}
	slices.Sort(lat)
	slices.Sort(partDur)
	pct := func(p float64) time.Duration { return lat[int(p*float64(len(lat)-1))] }
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(float64(len(lat)), "frames")
	b.ReportMetric(ms(pct(0.50)), "p50-ms")
	b.ReportMetric(ms(pct(0.99)), "p99-ms")
	b.ReportMetric(ms(lat[len(lat)-1]), "max-ms")
	b.ReportMetric(partDur[len(partDur)/2]*1000, "part-ms")
	b.ReportMetric(0, "ns/op")
	if limit := hls.DefaultPartTarget + 100*time.Millisecond; pct(0.99) > limit {
		b.Errorf("p99 %v exceeds part duration + 100 ms (%v)", pct(0.99), limit)
	}
}
