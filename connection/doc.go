// Package connection is the connection server: it holds viewers' WebSocket
// control links, keeps a profile per link and a mirror of group membership,
// fans one group message out to every member link, and relays client messages
// up to the application tier over the bus. It holds no poll, geography or QoE
// logic.
package connection
