package edge_test

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"golang.org/x/net/ipv4"

	"github.com/backchannel/backchannel/edge"
	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/rtc"
	"github.com/backchannel/backchannel/internal/whipclient"
)

// The fan-out benchmark runs its viewers in a child process (this test
// binary again, told so by fanoutChildEnv), so the server's CPU time is
// measured alone.
const fanoutChildEnv = "BACKCHANNEL_FANOUT_VIEWERS"

func TestMain(m *testing.M) {
	if cfg := os.Getenv(fanoutChildEnv); cfg != "" {
		os.Exit(runFanoutViewers(cfg))
	}
	os.Exit(m.Run())
}

var (
	fanoutViewers    = flag.Int("fanout.viewers", 200, "viewers in BenchmarkWHEPFanout")
	fanoutRounds     = flag.Int("fanout.rounds", 3, "rounds of phases in BenchmarkWHEPFanout")
	fanoutPhase      = flag.Duration("fanout.phase", 3*time.Second, "length of one phase in BenchmarkWHEPFanout")
	fanoutKbps       = flag.Int("fanout.kbps", 2500, "bitrate of the stream in BenchmarkWHEPFanout")
	fanoutBatchedRaw = flag.Bool("fanout.rawbatch", false, "also measure raw writes batched with sendmmsg (the kernel's floor)")
	fanoutPionSRTP   = flag.Bool("fanout.pionsrtp", false, "ours sends through pion's SRTP session (edge.Config.PionSRTP) instead of the direct path")
	fanoutPhases     = flag.String("fanout.phases", "ours,naive,raw", "phases of BenchmarkWHEPFanout, comma-separated (ours, naive, raw, rawbatch)")
	fanoutProfile    = flag.String("fanout.cpuprofile", "", "write a CPU profile of the server during the phases of ours to this file")
)

type fanoutChildConfig struct {
	WHEP, Naive string
	Viewers     int
}

type fanoutCounts struct{ Ours, Naive, Raw, OursActive, NaiveActive uint64 }

// BenchmarkWHEPFanout measures the server's CPU time per RTP packet
// forwarded to each of N WHEP viewers of one stream (SRTP included), on
// loopback, against two baselines in the same run, phases interleaved:
//
//   - raw: the same packets, unencrypted, written with one plain UDP write
//     per packet per viewer to N sockets;
//   - naive pion: one webrtc.TrackLocalStaticRTP with pion's default
//     interceptors, added to every viewer's peer connection, written once
//     per packet.
//
// Viewers (pion clients, with pion's default interceptors, like
// whipclient's) and the raw receivers run in a child process. The main
// figure is the CPU time of the thread that writes the stream's packets
// (getrusage(RUSAGE_THREAD); every variant fans out synchronously in it,
// the kernel's loopback delivery included) over packets written ×
// viewers; the same plus the garbage collector's CPU, and the whole
// process's CPU minus its idle rate, are logged too. Medians of the
// rounds are reported.
//
//	go test -run '^$' -bench WHEPFanout -benchtime 1x ./edge/ -fanout.viewers 200 -fanout.rounds 5
func BenchmarkWHEPFanout(b *testing.B) {
	n := *fanoutViewers
	quiet := slog.New(slog.DiscardHandler)

	// Ours: the registry, the WHEP server on the shared ICE mux.
	tr, err := rtc.Listen(rtc.Config{ICEAddr: "127.0.0.1:0", Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close()
	reg := media.NewRegistry("bench")
	defer reg.Close()
	srv, err := edge.New(edge.Config{Registry: reg, RTC: tr, PionSRTP: *fanoutPionSRTP})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	h264 := media.Codec{MimeType: media.MimeH264, ClockRate: 90000, Fmtp: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"}
	pub, err := reg.Publish("fan", media.PublisherInfo{Protocol: media.ProtocolWHIP}, []media.Codec{h264}, benchSource{})
	if err != nil {
		b.Fatal(err)
	}
	writer, _ := pub.Track(media.KindVideo)

	// Naive pion, on an ICE mux of its own.
	naiveTr, err := rtc.Listen(rtc.Config{ICEAddr: "127.0.0.1:0", Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	defer naiveTr.Close()
	naive, err := newNaiveServer(naiveTr)
	if err != nil {
		b.Fatal(err)
	}
	defer naive.close()

	mux := http.NewServeMux()
	mux.Handle("/whep/", srv.Handler())
	mux.Handle("/naive/", naive)
	hs := httptest.NewServer(mux)
	defer hs.Close()

	// The stream must have a keyframe before viewers come, and keep going
	// while they connect.
	src := newFanoutSource(*fanoutKbps)
	stopFeed := make(chan struct{})
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		tick := time.NewTicker(time.Second / 30)
		defer tick.Stop()
		for {
			select {
			case <-stopFeed:
				return
			case <-tick.C:
				for _, p := range src.frame() {
					_ = writer.WriteRTP(p)
				}
			}
		}
	}()

	phases := strings.Split(*fanoutPhases, ",")
	if *fanoutBatchedRaw && !slices.Contains(phases, "rawbatch") {
		phases = append(phases, "rawbatch")
	}
	naiveURL := ""
	if slices.Contains(phases, "naive") {
		naiveURL = hs.URL + "/naive/"
	}
	child, err := startFanoutChild(fanoutChildConfig{WHEP: hs.URL + "/whep/fan", Naive: naiveURL, Viewers: n})
	if err != nil {
		close(stopFeed)
		b.Fatal(err)
	}
	defer child.stop()
	close(stopFeed)
	<-fed
	if got := srv.Viewers(); got != n {
		b.Fatalf("%d WHEP viewers, want %d", got, n)
	}
	if got := naive.viewers(); naiveURL != "" && got != n {
		b.Fatalf("%d naive viewers, want %d", got, n)
	}
	raw, err := newRawSender(child.rawPorts)
	if err != nil {
		b.Fatal(err)
	}
	defer raw.close()

	// Three figures per phase, all over packets written × viewers:
	//   - send: CPU time of the OS thread that writes the packets (the
	//     fan-out is synchronous in every variant: ours encrypts and
	//     sendmmsg's in the writer's goroutine, pion's TrackLocalStaticRTP
	//     runs interceptors, SRTP and the socket write in it, raw writes);
	//     the kernel's loopback delivery is charged to it too;
	//   - send+gc: plus the garbage collector's CPU over the phase, minus
	//     its rate in the idle phase before (what allocations cost);
	//   - process: the whole process's CPU minus its idle rate (ICE,
	//     RTCP, timers of every connection) — noisy on a shared machine.
	send, sendGC, proc := map[string][]float64{}, map[string][]float64{}, map[string][]float64{}
	delivered := map[string][]float64{}
	b.ResetTimer()
	for round := 0; round < *fanoutRounds; round++ {
		for _, phase := range phases {
			// Each phase gets its own idle baseline, measured just before
			// it, after a collection: the background (ICE keepalives of
			// hundreds of connections, RTCP, the garbage of the previous
			// phase) is subtracted, not charged to whoever runs next.
			runtime.GC()
			time.Sleep(300 * time.Millisecond)
			idle := runPhase(*fanoutPhase/2, func() { src.frame() })

			before := child.counts()
			sentBefore, _ := srv.Sent()
			if phase == "ours" && *fanoutProfile != "" {
				f, err := os.Create(fmt.Sprintf("%s.%d", *fanoutProfile, round))
				if err != nil {
					b.Fatal(err)
				}
				_ = pprof.StartCPUProfile(f)
				defer f.Close()
			}
			m := runPhase(*fanoutPhase, func() {
				pkts := src.frame()
				switch phase {
				case "ours":
					for _, p := range pkts {
						_ = writer.WriteRTP(p)
					}
				case "naive":
					for _, p := range pkts {
						_ = naive.track.WriteRTP(p)
					}
				case "raw":
					for _, p := range pkts {
						raw.write(p)
					}
				case "rawbatch":
					for _, p := range pkts {
						raw.writeBatch(p)
					}
				}
			})
			if phase == "ours" && *fanoutProfile != "" {
				pprof.StopCPUProfile()
			}
			time.Sleep(300 * time.Millisecond) // let the receivers drain
			after := child.counts()
			sentAfter, _ := srv.Sent()
			packets := float64(m.frames*src.packetsPerFrame) * float64(n)
			switch phase {
			case "ours":
				packets = float64(sentAfter - sentBefore)
				b.Logf("round %d: %d of our viewers received, %d naive; server has %d viewers", round, after.OursActive, after.NaiveActive, srv.Viewers())
				delivered[phase] = append(delivered[phase], float64(after.Ours-before.Ours)/packets)
			case "naive":
				delivered[phase] = append(delivered[phase], float64(after.Naive-before.Naive)/packets)
			case "raw", "rawbatch":
				delivered[phase] = append(delivered[phase], float64(after.Raw-before.Raw)/packets)
			}
			wall := m.wall.Seconds()
			gc := m.gc - idle.gc/idle.wall.Seconds()*wall
			send[phase] = append(send[phase], m.thread.Seconds()/packets*1e6)
			sendGC[phase] = append(sendGC[phase], (m.thread.Seconds()+gc)/packets*1e6)
			proc[phase] = append(proc[phase], (m.process.Seconds()-idle.process.Seconds()/idle.wall.Seconds()*wall)/packets*1e6)
		}
	}
	b.StopTimer()
	med := func(v []float64) float64 {
		if len(v) == 0 {
			return math.NaN()
		}
		s := slices.Clone(v)
		slices.Sort(s)
		return s[len(s)/2]
	}
	ours, naiveUS, rawUS := med(send["ours"]), med(send["naive"]), med(send["raw"])
	b.ReportMetric(ours, "ours-µs/pkt")
	b.ReportMetric(naiveUS, "naive-µs/pkt")
	b.ReportMetric(rawUS, "raw-µs/pkt")
	b.ReportMetric(ours/rawUS, "ours/raw")
	b.ReportMetric(ours/naiveUS, "ours/naive")
	b.ReportMetric(med(sendGC["ours"])/med(sendGC["raw"]), "gc-ours/raw")
	b.ReportMetric(med(sendGC["ours"])/med(sendGC["naive"]), "gc-ours/naive")
	b.ReportMetric(med(delivered["ours"]), "ours-delivered")
	b.ReportMetric(med(delivered["naive"]), "naive-delivered")
	b.ReportMetric(med(delivered["raw"]), "raw-delivered")
	b.ReportMetric(0, "ns/op")
	b.Logf("viewers %d, %d kbit/s, %d packets/frame, µs per packet per viewer, rounds:", n, *fanoutKbps, src.packetsPerFrame)
	for _, phase := range phases {
		b.Logf("  %-8s send %v  send+gc %v  process %v  delivered %v", phase,
			round2(send[phase]), round2(sendGC[phase]), round2(proc[phase]), round2(delivered[phase]))
	}
}

func round2(v []float64) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(int(x*100+0.5)) / 100
	}
	return out
}

// phaseCost is what one phase took.
type phaseCost struct {
	wall, thread, process time.Duration
	gc                    float64 // seconds, the runtime's estimate
	frames                int
}

// runPhase calls frame at 30 fps for d, on one OS thread of its own, and
// returns the wall time, that thread's CPU time, the process's and the
// garbage collector's.
func runPhase(d time.Duration, frame func()) phaseCost {
	out := make(chan phaseCost)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		tick := time.NewTicker(time.Second / 30)
		defer tick.Stop()
		var c phaseCost
		startThread, startCPU, startGC, start := threadCPU(), processCPU(), gcCPU(), time.Now()
		for time.Since(start) < d {
			<-tick.C
			frame()
			c.frames++
		}
		c.wall, c.thread, c.process, c.gc = time.Since(start), threadCPU()-startThread, processCPU()-startCPU, gcCPU()-startGC
		out <- c
	}()
	return <-out
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// threadCPU is the calling thread's CPU time (RUSAGE_THREAD).
func threadCPU() time.Duration {
	const rusageThread = 1
	var ru syscall.Rusage
	_ = syscall.Getrusage(rusageThread, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func gcCPU() float64 {
	s := []metrics.Sample{{Name: "/cpu/classes/gc/total:cpu-seconds"}}
	metrics.Read(s)
	return s[0].Value.Float64()
}

type benchSource struct{}

func (benchSource) RequestKeyframe(media.Kind) {}
func (benchSource) Close() error               { return nil }

// fanoutSource makes a synthetic H.264 stream: 30 frames a second of
// packetsPerFrame single-NAL packets, a keyframe (SPS first) every 2 s.
type fanoutSource struct {
	packetsPerFrame int
	payload         int
	seq             uint16
	ts              uint32
	n               int
	pkts            []*rtp.Packet
}

func newFanoutSource(kbps int) *fanoutSource {
	frameBytes := kbps * 1000 / 8 / 30
	per := (frameBytes + 1149) / 1150
	s := &fanoutSource{packetsPerFrame: per, payload: frameBytes / per}
	for range per {
		p := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 102, SSRC: 0x1234}, Payload: make([]byte, s.payload)}
		for i := range p.Payload {
			p.Payload[i] = byte(1 + rand.IntN(255))
		}
		s.pkts = append(s.pkts, p)
	}
	return s
}

func (s *fanoutSource) frame() []*rtp.Packet {
	for i, p := range s.pkts {
		p.SequenceNumber = s.seq
		s.seq++
		p.Timestamp = s.ts
		p.Marker = i == len(s.pkts)-1
		p.Payload[0] = 0x41
		if s.n%60 == 0 {
			p.Payload[0] = 0x65
			if i == 0 {
				p.Payload[0] = 0x67
			}
		}
	}
	s.ts += 3000
	s.n++
	return s.pkts
}

// naiveServer is the pion baseline: one TrackLocalStaticRTP with pion's
// default codecs and interceptors, added to every viewer's connection.
type naiveServer struct {
	api   *webrtc.API
	track *webrtc.TrackLocalStaticRTP
	mu    sync.Mutex
	pcs   []*webrtc.PeerConnection
}

func newNaiveServer(tr *rtc.Transport) (*naiveServer, error) {
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		return nil, err
	}
	ir := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(me, ir); err != nil {
		return nil, err
	}
	track, err := webrtc.NewTrackLocalStaticRTP(whipclient.H264, "video", "naive")
	if err != nil {
		return nil, err
	}
	return &naiveServer{api: webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir),
		webrtc.WithSettingEngine(tr.SettingEngine())), track: track}, nil
}

func (s *naiveServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.WriteHeader(http.StatusOK) // DELETE
		return
	}
	offer, _ := io.ReadAll(r.Body)
	pc, err := s.api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	sender, err := pc.AddTrack(s.track)
	if err == nil {
		err = pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: string(offer)})
	}
	var answer string
	if err == nil {
		answer, err = rtc.Answer(r.Context(), pc)
	}
	if err != nil {
		_ = pc.Close()
		http.Error(w, err.Error(), 400)
		return
	}
	go func() {
		for {
			if _, _, err := sender.ReadRTCP(); err != nil {
				return
			}
		}
	}()
	s.mu.Lock()
	s.pcs = append(s.pcs, pc)
	s.mu.Unlock()
	w.Header().Set("Location", "/naive/x")
	w.Header().Set("Content-Type", "application/sdp")
	w.WriteHeader(http.StatusCreated)
	_, _ = io.WriteString(w, answer)
}

func (s *naiveServer) viewers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, pc := range s.pcs {
		if pc.ConnectionState() == webrtc.PeerConnectionStateConnected {
			n++
		}
	}
	return n
}

func (s *naiveServer) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, pc := range s.pcs {
		_ = pc.Close()
	}
}

// rawSender writes each packet, unencrypted, with one UDP write per
// receiver.
type rawSender struct {
	conn  *net.UDPConn
	addrs []netip.AddrPort
	buf   []byte
	pc    *ipv4.PacketConn
	msgs  []ipv4.Message
}

func newRawSender(ports []int) (*rawSender, error) {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	s := &rawSender{conn: conn, buf: make([]byte, 1500)}
	s.pc = ipv4.NewPacketConn(conn)
	for _, p := range ports {
		s.addrs = append(s.addrs, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(p)))
		s.msgs = append(s.msgs, ipv4.Message{Buffers: [][]byte{nil}, Addr: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p}})
	}
	return s, nil
}

func (s *rawSender) writeBatch(p *rtp.Packet) {
	n, err := p.MarshalTo(s.buf)
	if err != nil {
		return
	}
	for i := range s.msgs {
		s.msgs[i].Buffers[0] = s.buf[:n]
	}
	for rest := s.msgs; len(rest) > 0; {
		k, err := s.pc.WriteBatch(rest, 0)
		if err != nil || k == 0 {
			return
		}
		rest = rest[k:]
	}
}

func (s *rawSender) write(p *rtp.Packet) {
	n, err := p.MarshalTo(s.buf)
	if err != nil {
		return
	}
	for _, a := range s.addrs {
		_, _ = s.conn.WriteToUDPAddrPort(s.buf[:n], a)
	}
}

func (s *rawSender) close() { _ = s.conn.Close() }

// fanoutChild is the viewers' process.
type fanoutChild struct {
	cmd      *exec.Cmd
	in       io.WriteCloser
	out      *bufio.Scanner
	rawPorts []int
	mu       sync.Mutex
}

func startFanoutChild(cfg fanoutChildConfig) (*fanoutChild, error) {
	js, _ := json.Marshal(cfg)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fanoutChildEnv+"="+string(js))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &fanoutChild{cmd: cmd, in: in, out: bufio.NewScanner(out)}
	var ready struct {
		Raw   []int
		Error string
	}
	if !c.out.Scan() || json.Unmarshal(c.out.Bytes(), &ready) != nil || ready.Error != "" {
		c.stop()
		return nil, fmt.Errorf("viewer process: %q %s", c.out.Text(), ready.Error)
	}
	c.rawPorts = ready.Raw
	return c, nil
}

func (c *fanoutChild) counts() fanoutCounts {
	c.mu.Lock()
	defer c.mu.Unlock()
	var n fanoutCounts
	if _, err := io.WriteString(c.in, "count\n"); err == nil && c.out.Scan() {
		_ = json.Unmarshal(c.out.Bytes(), &n)
	}
	return n
}

func (c *fanoutChild) stop() {
	_, _ = io.WriteString(c.in, "quit\n")
	done := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
	}
}

// runFanoutViewers is the child: N WHEP viewers of ours, N of the naive
// server, N raw UDP receivers, counting packets; it answers "count" on
// stdin with the counts and exits on "quit".
func runFanoutViewers(js string) int {
	var cfg fanoutChildConfig
	if err := json.Unmarshal([]byte(js), &cfg); err != nil {
		fmt.Printf("{\"error\":%q}\n", err.Error())
		return 1
	}
	var counts struct{ ours, naive, raw atomic.Uint64 }
	var conns []*net.UDPConn
	var ports []int
	var wg sync.WaitGroup
	for range cfg.Viewers {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			fmt.Printf("{\"error\":%q}\n", err.Error())
			return 1
		}
		_ = c.SetReadBuffer(1 << 20)
		conns = append(conns, c)
		ports = append(ports, c.LocalAddr().(*net.UDPAddr).Port)
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1500)
			for {
				if _, err := c.Read(buf); err != nil {
					return
				}
				counts.raw.Add(1)
			}
		}()
	}
	var players []*whipclient.Player
	var muxes []ice.UDPMux
	type playerCount struct {
		ours bool
		n    *atomic.Uint64
		last uint64
	}
	var perPlayer []playerCount
	var mu sync.Mutex
	sem := make(chan struct{}, 8)
	var errOnce sync.Once
	var firstErr error
	var pwg sync.WaitGroup
	for i := range 2 * cfg.Viewers {
		pwg.Add(1)
		sem <- struct{}{}
		go func() {
			defer pwg.Done()
			defer func() { <-sem }()
			url, counter := cfg.WHEP, &counts.ours
			if i%2 == 1 && cfg.Naive == "" {
				return
			}
			if i%2 == 1 {
				url, counter = cfg.Naive, &counts.naive
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			// Each viewer on a socket of its own with a large receive
			// buffer: the viewers' process must not be the one losing
			// packets on a busy machine.
			conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				errOnce.Do(func() { firstErr = err })
				return
			}
			_ = conn.SetReadBuffer(4 << 20)
			udpMux := ice.NewUDPMuxDefault(ice.UDPMuxParams{UDPConn: conn})
			mu.Lock()
			muxes = append(muxes, udpMux)
			mu.Unlock()
			se := whipclient.DefaultSettingEngine()
			se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
			se.SetICEUDPMux(udpMux)
			own := new(atomic.Uint64)
			var p *whipclient.Player
			for try := 0; ; try++ { // a busy machine fails a setup now and then
				p, err = whipclient.Play(ctx, url, whipclient.WithoutAudio(), whipclient.WithSettingEngine(se),
					whipclient.OnRTP(func(*webrtc.TrackRemote, *rtp.Packet) { counter.Add(1); own.Add(1) }))
				if err == nil || try == 2 || ctx.Err() != nil {
					break
				}
			}
			if err != nil {
				errOnce.Do(func() { firstErr = err })
				return
			}
			mu.Lock()
			players = append(players, p)
			perPlayer = append(perPlayer, playerCount{ours: i%2 == 0, n: own})
			mu.Unlock()
		}()
	}
	pwg.Wait()
	if firstErr != nil {
		fmt.Printf("{\"error\":%q}\n", firstErr.Error())
		return 1
	}
	time.Sleep(time.Second)
	js2, _ := json.Marshal(map[string][]int{"Raw": ports})
	fmt.Println(string(js2))
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch strings.TrimSpace(in.Text()) {
		case "count":
			c := fanoutCounts{Ours: counts.ours.Load(), Naive: counts.naive.Load(), Raw: counts.raw.Load()}
			mu.Lock()
			for i := range perPlayer {
				pc := &perPlayer[i]
				if n := pc.n.Load(); n != pc.last {
					pc.last = n
					if pc.ours {
						c.OursActive++
					} else {
						c.NaiveActive++
					}
				}
			}
			mu.Unlock()
			b, _ := json.Marshal(c)
			fmt.Println(string(b))
		case "quit":
			for _, p := range players {
				_ = p.Close()
			}
			for _, m := range muxes {
				_ = m.Close()
			}
			for _, c := range conns {
				_ = c.Close()
			}
			wg.Wait()
			return 0
		}
	}
	return 0
}
