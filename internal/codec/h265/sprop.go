package h265

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// maxSpropSets bounds how many parameter sets one sprop value may carry.
const maxSpropSets = 32

// ParseSprop decodes an RFC 7798 sprop-vps, sprop-sps or sprop-pps value:
// comma-separated base64 NAL units.
func ParseSprop(value string) ([][]byte, error) {
	parts := strings.Split(value, ",")
	if len(parts) > maxSpropSets {
		return nil, errors.New("h265: too many parameter sets in sprop")
	}
	var out [][]byte
	for _, p := range parts {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		b, err := base64.StdEncoding.DecodeString(p)
		if err != nil {
			b, err = base64.RawStdEncoding.DecodeString(strings.TrimRight(p, "="))
			if err != nil {
				return nil, fmt.Errorf("h265: sprop: %w", err)
			}
		}
		if len(b) >= 2 {
			out = append(out, b)
		}
	}
	return out, nil
}

// FMTP is what an H.265 SDP fmtp line says about a stream.
type FMTP struct {
	VPS, SPS, PPS []byte // the first of each, nil when absent
	// MaxDONDiff is sprop-max-don-diff; above 0 the packets carry decoding
	// order numbers, which the Depacketizer does not support.
	MaxDONDiff int
}

// ParseFMTP parses the parameters of an a=fmtp line for H.265 (the part
// after the payload type).
func ParseFMTP(fmtp string) (FMTP, error) {
	var f FMTP
	for _, kv := range strings.Split(fmtp, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			continue
		}
		var dst *[]byte
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "sprop-vps":
			dst = &f.VPS
		case "sprop-sps":
			dst = &f.SPS
		case "sprop-pps":
			dst = &f.PPS
		case "sprop-max-don-diff":
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil || n < 0 || n > 32767 {
				return f, fmt.Errorf("h265: invalid sprop-max-don-diff %q", v)
			}
			f.MaxDONDiff = n
			continue
		default:
			continue
		}
		sets, err := ParseSprop(v)
		if err != nil {
			return f, err
		}
		if len(sets) > 0 {
			*dst = sets[0]
		}
	}
	return f, nil
}
