package cluster

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/backchannel/backchannel/internal/problem"
)

// RetryAfter is what /connect tells clients to wait when no connection
// server is alive: about the time a restarted one takes to be gossiped.
const RetryAfter = 2 * time.Second

// ConnectHandler serves GET /connect, the load balancer endpoint, from
// any node: {"url":"ws://…/ws"} naming the least-loaded live connection
// server (see PickConnection), or 503 with Retry-After when there is none.
func (n *Node) ConnectHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			problem.Write(w, http.StatusMethodNotAllowed, "use GET")
			return
		}
		m, ok := n.PickConnection()
		if !ok {
			problem.WriteRetry(w, http.StatusServiceUnavailable, RetryAfter, "no connection server is available; retry shortly")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(struct {
			URL    string `json:"url"`
			Node   string `json:"node"`
			Region string `json:"region,omitempty"`
		}{m.WS, m.ID, m.Region})
	})
}
