package media

// StreamNameRule says what ValidStreamName accepts, for error messages.
const StreamNameRule = "stream names are 1-64 characters of A-Z a-z 0-9 _ . -"

// ValidStreamName reports whether name is acceptable as a stream name: it
// appears in URL paths (WHIP, WHEP, HLS, RTSP), group ids and Redis keys,
// so it is kept to 1-64 characters that need no escaping anywhere.
func ValidStreamName(name string) bool {
	if len(name) == 0 || len(name) > 64 {
		return false
	}
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '.', c == '-':
		default:
			return false
		}
	}
	return true
}
