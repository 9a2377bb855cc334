// Package rtc owns the process's WebRTC transport: the single ICE UDP mux port
// (with ICE-TCP on the same port number), 1:1 NAT addresses and the ICE
// servers handed to clients. Ingest (WHIP) and edge (WHEP) both build their
// peer connections from it so every WebRTC session shares one port.
package rtc

import (
	"log/slog"

	"github.com/pion/webrtc/v4"
)

// Config configures the shared transport.
type Config struct {
	// ICEAddr is the UDP address of the ICE mux; ICE-TCP listens on the same
	// port number. ":8189" by default; port 0 picks a free port.
	ICEAddr string
	// PublicIPs are announced instead of the host's own addresses (1:1 NAT).
	PublicIPs []string
	// ICEServers (STUN/TURN) are advertised to clients in WHIP/WHEP Link headers.
	ICEServers []webrtc.ICEServer
	Logger     *slog.Logger
}
