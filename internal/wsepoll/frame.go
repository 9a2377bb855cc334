package wsepoll

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Opcodes (RFC 6455 section 5.2).
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xa
)

// CloseError is a violation of RFC 6455 by the peer; the transport closes
// the connection with Code.
type CloseError struct {
	Code int
	Msg  string
}

func (e *CloseError) Error() string { return fmt.Sprintf("websocket: %s (close %d)", e.Msg, e.Code) }

// Is matches errors of the same close code, so that errors.Is(err,
// ErrTooBig) holds for every too-big error whatever its message.
func (e *CloseError) Is(target error) bool {
	t, ok := target.(*CloseError)
	return ok && t.Code == e.Code
}

// Close codes the transport sends on its own, and errors that carry them.
const (
	CodeProtocolError = 1002
	CodeInvalidData   = 1007
	CodeTooBig        = 1009
)

var (
	// ErrProtocol: a frame that breaks RFC 6455 (reserved bits or opcodes,
	// an unmasked client frame, a fragmented or long control frame, a bad
	// continuation, a malformed close frame).
	ErrProtocol = &CloseError{CodeProtocolError, "protocol error"}
	// ErrTooBig: a message longer than Config.MaxMessage.
	ErrTooBig = &CloseError{CodeTooBig, "message too big"}
	// ErrInvalidUTF8: a text message or close reason that is not UTF-8.
	ErrInvalidUTF8 = &CloseError{CodeInvalidData, "invalid UTF-8"}
)

func protocolError(msg string) error { return &CloseError{CodeProtocolError, msg} }

// header is a parsed frame header.
type header struct {
	fin    bool
	op     byte
	mask   [4]byte
	length int
}

// maxHeader is the longest client frame header: 2 + 8 length + 4 mask.
const maxHeader = 14

// parseHeader parses the client frame header at the start of b. It returns
// size 0 (and no error) while b does not hold the whole header. Frames
// longer than max are refused from their header, before their payload is
// read.
func parseHeader(b []byte, max int) (h header, size int, err error) {
	if len(b) < 2 {
		return h, 0, nil
	}
	b0, b1 := b[0], b[1]
	h.fin = b0&0x80 != 0
	if b0&0x70 != 0 {
		return h, 0, protocolError("reserved bits set without an extension")
	}
	h.op = b0 & 0x0f
	switch h.op {
	case opContinuation, opText, opBinary, opClose, opPing, opPong:
	default:
		return h, 0, protocolError(fmt.Sprintf("reserved opcode %#x", h.op))
	}
	if b1&0x80 == 0 {
		return h, 0, protocolError("client frame not masked")
	}
	size = 2
	var length uint64
	switch l := b1 & 0x7f; l {
	case 126:
		if len(b) < 4 {
			return h, 0, nil
		}
		length = uint64(binary.BigEndian.Uint16(b[2:4]))
		size = 4
	case 127:
		if len(b) < 10 {
			return h, 0, nil
		}
		length = binary.BigEndian.Uint64(b[2:10])
		if length>>63 != 0 {
			return h, 0, protocolError("64-bit length with the top bit set")
		}
		size = 10
	default:
		length = uint64(l)
	}
	if h.op >= opClose && (!h.fin || length > 125) {
		return h, 0, protocolError("control frame fragmented or longer than 125 bytes")
	}
	if length > uint64(max) {
		return h, 0, ErrTooBig
	}
	if len(b) < size+4 {
		return h, 0, nil
	}
	copy(h.mask[:], b[size:size+4])
	h.length = int(length)
	return h, size + 4, nil
}

// Frame returns payload as one unmasked, unfragmented server text frame,
// header included, in a single allocation. Build it once and Send the same
// slice to every connection that should receive it.
func Frame(payload []byte) []byte { return frame(opText, payload) }

// AppendFrame appends payload as one server text frame to b.
func AppendFrame(b, payload []byte) []byte {
	return append(AppendFrameHeader(b, len(payload)), payload...)
}

// AppendFrameHeader appends the header of a server text frame of n payload
// bytes to b; the payload is to follow.
func AppendFrameHeader(b []byte, n int) []byte {
	switch {
	case n < 126:
		return append(b, 0x80|opText, byte(n))
	case n <= 0xffff:
		return append(b, 0x80|opText, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|opText, 127)
		return binary.BigEndian.AppendUint64(b, uint64(n))
	}
}

func frame(op byte, payload []byte) []byte {
	n := len(payload)
	var out []byte
	switch {
	case n < 126:
		out = make([]byte, 2, 2+n)
		out[1] = byte(n)
	case n <= 0xffff:
		out = make([]byte, 4, 4+n)
		out[1] = 126
		binary.BigEndian.PutUint16(out[2:], uint16(n))
	default:
		out = make([]byte, 10, 10+n)
		out[1] = 127
		binary.BigEndian.PutUint64(out[2:], uint64(n))
	}
	out[0] = 0x80 | op
	return append(out, payload...)
}

// closeFrame builds a close frame; code 0 sends an empty body.
func closeFrame(code int, reason string) []byte {
	if code == 0 {
		return frame(opClose, nil)
	}
	if len(reason) > 123 {
		reason = reason[:123]
	}
	body := make([]byte, 2+len(reason))
	binary.BigEndian.PutUint16(body, uint16(code))
	copy(body[2:], reason)
	return frame(opClose, body)
}

var pingFrame = frame(opPing, nil)

// parseClose checks a close frame's body: no body, or a valid code and a
// UTF-8 reason.
func parseClose(body []byte) (code int, reason string, err error) {
	switch len(body) {
	case 0:
		return 1005, "", nil // no status received
	case 1:
		return 0, "", protocolError("close frame with a one-byte body")
	}
	code = int(binary.BigEndian.Uint16(body))
	if !validCloseCode(code) {
		return 0, "", protocolError(fmt.Sprintf("close code %d may not be sent", code))
	}
	if !validUTF8(body[2:]) {
		return 0, "", ErrInvalidUTF8
	}
	return code, string(body[2:]), nil
}

// validCloseCode reports whether a peer may send code (RFC 6455 7.4).
func validCloseCode(code int) bool {
	switch {
	case code >= 3000 && code <= 4999:
		return true
	case code >= 1000 && code <= 1014:
		return code != 1004 && code != 1005 && code != 1006
	}
	return false
}

var errNotHijackable = errors.New("wsepoll: connection cannot be taken over (not a plain TCP or Unix socket)")
