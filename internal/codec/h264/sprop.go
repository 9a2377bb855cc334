package h264

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// maxSpropSets bounds how many parameter sets one sprop value may carry.
const maxSpropSets = 32

// ParseSpropParameterSets decodes the RFC 6184 sprop-parameter-sets fmtp
// value: comma-separated base64 NAL units, usually an SPS then a PPS.
func ParseSpropParameterSets(value string) ([][]byte, error) {
	parts := strings.Split(value, ",")
	if len(parts) > maxSpropSets {
		return nil, errors.New("h264: too many sprop-parameter-sets")
	}
	var out [][]byte
	for _, p := range parts {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		b, err := base64.StdEncoding.DecodeString(p)
		if err != nil {
			// Some senders omit the padding.
			b, err = base64.RawStdEncoding.DecodeString(strings.TrimRight(p, "="))
			if err != nil {
				return nil, fmt.Errorf("h264: sprop-parameter-sets: %w", err)
			}
		}
		if len(b) == 0 {
			continue
		}
		out = append(out, b)
	}
	return out, nil
}

// FMTP is what an H.264 SDP fmtp line says about a stream.
type FMTP struct {
	PacketizationMode int    // 0: single NAL, 1: non-interleaved, 2: interleaved
	ProfileLevelID    string // six hex digits, as given
	SPS, PPS          []byte // from sprop-parameter-sets, nil when absent
}

// ParseFMTP parses the parameters of an a=fmtp line for H.264 (the part
// after the payload type), e.g.
// "packetization-mode=1;profile-level-id=42e01f;sprop-parameter-sets=Z0Lg...,aM4..."
func ParseFMTP(fmtp string) (FMTP, error) {
	var f FMTP
	for _, kv := range strings.Split(fmtp, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			continue
		}
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "packetization-mode":
			m, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil || m < 0 || m > 2 {
				return f, fmt.Errorf("h264: invalid packetization-mode %q", v)
			}
			f.PacketizationMode = m
		case "profile-level-id":
			f.ProfileLevelID = strings.TrimSpace(v)
		case "sprop-parameter-sets":
			sets, err := ParseSpropParameterSets(v)
			if err != nil {
				return f, err
			}
			for _, s := range sets {
				switch TypeOf(s) {
				case NALUTypeSPS:
					if f.SPS == nil {
						f.SPS = s
					}
				case NALUTypePPS:
					if f.PPS == nil {
						f.PPS = s
					}
				}
			}
		}
	}
	return f, nil
}
