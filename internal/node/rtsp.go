package node

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/backchannel/backchannel/application"
	"github.com/backchannel/backchannel/ingest"
	"github.com/backchannel/backchannel/ingest/rtsp"
	"github.com/backchannel/backchannel/internal/keys"
)

// rtspTier is what the node runs for stream keys and RTSP: the key store
// (shared by WHIP and RTSP), the RTSP server and the pulls.
type rtspTier struct {
	keys   *keys.Keys
	server *rtsp.Server
	puller *rtsp.Puller
}

// PullsFile is where the configured RTSP pulls live under the data
// directory.
const PullsFile = "pulls.json"

func defaultRTSPAddr(rtspAddr, httpAddr string) string {
	if rtspAddr != "" {
		return rtspAddr
	}
	if host, port, err := net.SplitHostPort(httpAddr); err == nil && port == "0" {
		return net.JoinHostPort(host, "0")
	}
	return rtsp.DefaultAddr
}

// openKeys opens the durable stream key store — a file under the data
// directory, or Redis in a cluster, where revocations reach every ingest
// node; --publish-key stays the master key.
func (n *Node) openKeys() error {
	var store keys.Store
	if n.clustered() {
		store = keys.DialRedis(n.cfg.RedisAddr)
	} else {
		fs, err := keys.OpenFile(filepath.Join(n.cfg.DataDir, keys.FileName))
		if err != nil {
			return err
		}
		store = fs
	}
	n.rtsp.keys = keys.New(store, n.secrets.PublishKey, n.log)
	if n.registry == nil {
		return nil
	}
	// A revoked key's sessions end, whatever protocol they publish with.
	n.rtsp.keys.OnRevoke(func(stream, id string) {
		if ended := ingest.EndRevoked(n.registry, stream, id); ended > 0 {
			n.log.Info("ended sessions of a revoked stream key", "stream", stream, "key", id, "sessions", ended)
		}
	})
	return nil
}

func (n *Node) startRTSP(reg prometheus.Registerer) error {
	var err error
	n.rtsp.server, err = rtsp.Listen(rtsp.Config{
		Addr:     n.cfg.RTSPAddr,
		Node:     n.cfg.NodeID,
		Registry: n.registry,
		Keys:     n.rtsp.keys,
		Logger:   n.log,
		Metrics:  reg,
	})
	if err != nil {
		return fmt.Errorf("rtsp: %w", err)
	}
	n.rtsp.puller, err = rtsp.NewPuller(rtsp.PullerConfig{
		Registry: n.registry,
		File:     filepath.Join(n.cfg.DataDir, PullsFile),
		Logger:   n.log,
		Metrics:  reg,
	})
	if err != nil {
		return fmt.Errorf("rtsp pulls: %w", err)
	}
	return nil
}

func (n *Node) closeRTSP() {
	if n.rtsp.puller != nil {
		_ = n.rtsp.puller.Close()
	}
	if n.rtsp.server != nil {
		_ = n.rtsp.server.Close()
	}
	if n.rtsp.keys != nil {
		_ = n.rtsp.keys.Store().Close()
	}
}

// RTSPAddr is the bound RTSP address, nil on a node without the ingest role.
func (n *Node) RTSPAddr() *net.TCPAddr {
	if n.rtsp.server == nil {
		return nil
	}
	return n.rtsp.server.Addr()
}

// RTSPBase is the RTSP base URL to print for people: the public URL's
// host when set, else this machine.
func (n *Node) RTSPBase() string {
	port := n.RTSPAddr().Port
	host := "localhost"
	if u, err := url.Parse(n.cfg.PublicURL); err == nil && u.Hostname() != "" {
		host = u.Hostname()
	} else if ip := n.RTSPAddr().IP; !ip.IsUnspecified() {
		host = ip.String()
	}
	return fmt.Sprintf("rtsp://%s", net.JoinHostPort(host, fmt.Sprint(port)))
}

// Keys is the node's stream key service.
func (n *Node) Keys() *keys.Keys { return n.rtsp.keys }

// pullAPI adapts the RTSP puller to the application tier's Pulls.
type pullAPI struct{ p *rtsp.Puller }

func (a pullAPI) AddPull(s application.PullSpec) (application.PullView, error) {
	st, err := a.p.Add(rtsp.PullConfig{Stream: s.Stream, URL: s.URL, OnDemand: s.OnDemand})
	if errors.Is(err, rtsp.ErrPullExists) {
		return application.PullView{}, application.ErrPullExists
	}
	return pullView(st), err
}

func (a pullAPI) RemovePull(stream string) error {
	err := a.p.Remove(stream)
	if errors.Is(err, rtsp.ErrNoPull) {
		return application.ErrNoSuchPull
	}
	return err
}

func (a pullAPI) Pull(stream string) (application.PullView, bool) {
	st, ok := a.p.Get(stream)
	return pullView(st), ok
}

func (a pullAPI) ListPulls() []application.PullView {
	list := a.p.List()
	out := make([]application.PullView, 0, len(list))
	for _, st := range list {
		out = append(out, pullView(st))
	}
	return out
}

func pullView(st rtsp.PullStatus) application.PullView {
	return application.PullView{
		PullSpec: application.PullSpec{Stream: st.Stream, URL: st.URL, OnDemand: st.OnDemand},
		State:    st.State, Error: st.Error, Since: st.Since, Restarts: st.Restarts,
	}
}
