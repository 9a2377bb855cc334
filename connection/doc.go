// Package connection is the connection server: it holds viewers' WebSocket
// control links, keeps a profile per link and a mirror of group membership,
// fans one group message out to every member link, and relays client
// messages up to the application tier over the bus. It holds no poll,
// geography or QoE logic.
//
// Links are served by internal/wsepoll (no goroutine per idle link; writes
// made directly by the fan-out) or, for TLS listeners and by choice, by
// coder/websocket. One timing wheel enforces every link's deadlines. The
// server keeps a short per-group history of group messages so that a client
// that reconnects with resume gets what it missed, drains its links with
// 1012 on Shutdown so a rolling restart loses no one, and re-announces its
// links upward after a bus reset.
package connection
