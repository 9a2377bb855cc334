package main

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/pion/webrtc/v4"
)

// parseICEServers reads "stun:host:port,turn:user:pass@host:port?transport=udp".
// Credentials ride in the URL's user info because the standard ICE URL syntax
// (RFC 7064/7065) has no place for them; they are moved to the ICEServer's
// Username and Credential fields.
func parseICEServers(list string) ([]webrtc.ICEServer, error) {
	var servers []webrtc.ICEServer
	for _, raw := range splitList(list) {
		scheme, rest, ok := strings.Cut(raw, ":")
		switch scheme {
		case "stun", "stuns", "turn", "turns":
		default:
			return nil, fmt.Errorf("--ice-servers: %q is not a stun:, stuns:, turn: or turns: URL", raw)
		}
		if !ok || rest == "" {
			return nil, fmt.Errorf("--ice-servers: %q has no host", raw)
		}
		s := webrtc.ICEServer{}
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			user, pass, _ := strings.Cut(rest[:at], ":")
			var err error
			if s.Username, err = url.PathUnescape(user); err != nil {
				return nil, fmt.Errorf("--ice-servers: %q: %w", raw, err)
			}
			if s.Credential, err = url.PathUnescape(pass); err != nil {
				return nil, fmt.Errorf("--ice-servers: %q: %w", raw, err)
			}
			rest = rest[at+1:]
		}
		if strings.HasPrefix(scheme, "turn") && s.Username == "" {
			return nil, fmt.Errorf("--ice-servers: %q: TURN needs user:password@", raw)
		}
		s.URLs = []string{scheme + ":" + rest}
		servers = append(servers, s)
	}
	return servers, nil
}
