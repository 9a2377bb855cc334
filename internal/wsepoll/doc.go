// Package wsepoll is a server-side WebSocket transport (RFC 6455) for very
// many mostly idle connections, on Linux. gobwas/ws answers the upgrade on
// the hijacked socket; from then on no goroutine belongs to a connection.
// A few poller goroutines wait on epoll, read ready sockets into one shared
// buffer per poller, decode frames (unmasking, fragments, ping/pong, the
// close handshake, size and UTF-8 checks) and hand complete messages to the
// connection's Handler. Writes are made directly and non-blocking by
// whoever sends; a connection keeps a backlog only while its socket would
// block, and EPOLLOUT drains it. So an idle connection costs a Conn struct
// and its kernel socket, nothing more.
package wsepoll
