package loadgen

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"time"
)

// RawServer is the baseline the load generator compares the connection
// server with: it accepts the same WebSocket links (same handshake, the
// same replies to hello and watch, so clients cannot tell the difference)
// and, on POST /trigger, writes one pre-framed notice to every link with
// plain net.Conn.Write calls, split over as many goroutines as the
// connection server would use. What it costs is what the kernel costs.
type RawServer struct {
	ln     net.Listener
	srv    *http.Server
	shards int

	mu    sync.Mutex
	conns []*rawConn
	off   uint64
	wg    sync.WaitGroup
}

type rawConn struct {
	nc net.Conn
	mu sync.Mutex
}

func (c *rawConn) write(b []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, err := c.nc.Write(b)
	return err
}

// ListenRaw starts a baseline server on addr. shards ≤ 0 uses what the
// connection server would for a large group: GOMAXPROCS goroutines.
func ListenRaw(addr string, shards int) (*RawServer, error) {
	if shards <= 0 {
		shards = runtime.GOMAXPROCS(0)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &RawServer{ln: ln, shards: shards}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws", s.serveWS)
	mux.HandleFunc("POST /trigger", s.trigger)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = s.srv.Serve(ln)
	}()
	return s, nil
}

// Addr is the listening address.
func (s *RawServer) Addr() string { return s.ln.Addr().String() }

// Close stops the server and drops every link.
func (s *RawServer) Close() error {
	err := s.srv.Close()
	s.mu.Lock()
	for _, c := range s.conns {
		c.nc.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

func (s *RawServer) serveWS(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get("Sec-WebSocket-Key")
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") || key == "" {
		http.Error(w, "websocket upgrade expected", http.StatusBadRequest)
		return
	}
	nc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	sum := sha1.Sum([]byte(key + wsGUID))
	_, err = fmt.Fprintf(nc, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
		base64.StdEncoding.EncodeToString(sum[:]))
	if err != nil {
		nc.Close()
		return
	}
	c := &rawConn{nc: nc}
	s.mu.Lock()
	s.conns = append(s.conns, c)
	s.mu.Unlock()
	s.wg.Add(1)
	defer s.wg.Done()
	s.readLoop(c, brw.Reader)
}

var (
	rawWelcome = serverFrame(`{"t":"welcome","sid":"raw-baseline","uid":"raw-baseline","token":"raw","seq":1}`)
	rawWatch   = append(serverFrame(`{"t":"endpoint","stream":"demo","whep":"/whep/demo","hls":"","edge":"raw","seq":2}`),
		serverFrame(`{"t":"stream-status","stream":"demo","state":"live","seq":3}`)...)
)

// readLoop answers hello and watch, and otherwise reads until the link
// ends.
func (s *RawServer) readLoop(c *rawConn, br *bufio.Reader) {
	defer c.nc.Close()
	for {
		var h [2]byte
		if _, err := io.ReadFull(br, h[:]); err != nil {
			return
		}
		n := int(h[1] & 0x7f)
		switch n {
		case 126:
			var l [2]byte
			if _, err := io.ReadFull(br, l[:]); err != nil {
				return
			}
			n = int(binary.BigEndian.Uint16(l[:]))
		case 127:
			return // no client here sends that much
		}
		var mask [4]byte
		if _, err := io.ReadFull(br, mask[:]); err != nil {
			return
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(br, p); err != nil {
			return
		}
		for i := range p {
			p[i] ^= mask[i%4]
		}
		var reply []byte
		switch {
		case h[0]&0x0f == 0x8:
			return
		case strings.HasPrefix(string(p), `{"t":"hello"`):
			reply = rawWelcome
		case strings.HasPrefix(string(p), `{"t":"watch"`):
			reply = rawWatch
		}
		if reply != nil && c.write(reply) != nil {
			return
		}
	}
}

// trigger sends {"message": text} as a notice, stamped now, to every link.
func (s *RawServer) trigger(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Group   string `json:"group"`
		Message string `json:"message"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ts := float64(time.Now().UnixMicro()) / 1000
	s.mu.Lock()
	s.off++
	payload, _ := json.Marshal(struct {
		T     string  `json:"t"`
		G     string  `json:"g"`
		Off   uint64  `json:"off"`
		Ep    string  `json:"ep"`
		Text  string  `json:"text"`
		Level string  `json:"level"`
		TS    float64 `json:"ts"`
	}{"notice", req.Group, s.off, "RAWBASEL", req.Message, "info", ts})
	conns := s.conns
	s.mu.Unlock()
	frame := serverFrame(string(payload))
	var wg sync.WaitGroup
	per := (len(conns) + s.shards - 1) / max(s.shards, 1)
	for i := 0; i < len(conns); i += max(per, 1) {
		part := conns[i:min(i+per, len(conns))]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, c := range part {
				_ = c.write(frame)
			}
		}()
	}
	wg.Wait()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	fmt.Fprintf(w, `{"ts":%.3f,"links":%d}`+"\n", ts, len(conns))
}

// serverFrame frames a text payload, unmasked.
func serverFrame(payload string) []byte {
	n := len(payload)
	var b []byte
	switch {
	case n < 126:
		b = []byte{0x81, byte(n)}
	case n <= 0xffff:
		b = []byte{0x81, 126, byte(n >> 8), byte(n)}
	default:
		panic(errors.New("loadgen: frame too large"))
	}
	return append(b, payload...)
}
