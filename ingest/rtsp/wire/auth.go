package wire

import (
	"crypto/md5"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"strings"
)

// Credentials are the contents of an Authorization header: Basic
// (RFC 7617) or Digest (RFC 2617, MD5, with or without qop=auth).
type Credentials struct {
	Scheme   string // "basic" or "digest"
	Username string
	Password string // Basic only

	Realm, Nonce, URI, Response, Algorithm, Opaque string
	QOP, NC, CNonce                                string
}

// ParseAuthorization parses an Authorization header.
func ParseAuthorization(v string) (Credentials, error) {
	scheme, rest, _ := strings.Cut(strings.TrimSpace(v), " ")
	var c Credentials
	switch strings.ToLower(scheme) {
	case "basic":
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(rest))
		if err != nil {
			return c, errorf(StatusBadRequest, "malformed Basic credentials")
		}
		user, pass, ok := strings.Cut(string(raw), ":")
		if !ok {
			return c, errorf(StatusBadRequest, "malformed Basic credentials")
		}
		c.Scheme, c.Username, c.Password = "basic", user, pass
		return c, nil
	case "digest":
		params, err := parseAuthParams(rest)
		if err != nil {
			return c, err
		}
		c.Scheme = "digest"
		c.Username, c.Realm, c.Nonce = params["username"], params["realm"], params["nonce"]
		c.URI, c.Response, c.Algorithm = params["uri"], params["response"], params["algorithm"]
		c.Opaque, c.QOP, c.NC, c.CNonce = params["opaque"], params["qop"], params["nc"], params["cnonce"]
		if c.Username == "" || c.Nonce == "" || c.URI == "" || c.Response == "" {
			return c, errorf(StatusBadRequest, "incomplete Digest credentials")
		}
		if c.Algorithm != "" && !strings.EqualFold(c.Algorithm, "MD5") {
			return c, errorf(StatusBadRequest, "unsupported Digest algorithm %q", truncate(c.Algorithm))
		}
		return c, nil
	}
	return c, errorf(StatusBadRequest, "unsupported authorization scheme %q", truncate(scheme))
}

// VerifyDigest reports whether Digest credentials answer the challenge for
// method given HA1 = MD5(username:realm:password).
func (c Credentials) VerifyDigest(ha1, method string) bool {
	want := DigestResponse(ha1, method, c.URI, c.Nonce, c.QOP, c.NC, c.CNonce)
	return subtle.ConstantTimeCompare([]byte(want), []byte(strings.ToLower(c.Response))) == 1
}

// DigestResponse computes an RFC 2617 MD5 response; qop is "" or "auth".
func DigestResponse(ha1, method, uri, nonce, qop, nc, cnonce string) string {
	ha2 := md5hex(method + ":" + uri)
	if qop == "" {
		return md5hex(ha1 + ":" + nonce + ":" + ha2)
	}
	return md5hex(ha1 + ":" + nonce + ":" + nc + ":" + cnonce + ":" + qop + ":" + ha2)
}

// DigestHA1 computes MD5(username:realm:password).
func DigestHA1(username, realm, password string) string {
	return md5hex(username + ":" + realm + ":" + password)
}

func md5hex(s string) string {
	h := md5.Sum([]byte(s))
	return hex.EncodeToString(h[:])
}

// Challenge is one WWW-Authenticate challenge.
type Challenge struct {
	Scheme string // "basic" or "digest"
	Realm  string
	Nonce  string
	Opaque string
	QOP    string // "auth" when offered
}

// ParseChallenge parses one WWW-Authenticate value.
func ParseChallenge(v string) (Challenge, error) {
	scheme, rest, _ := strings.Cut(strings.TrimSpace(v), " ")
	params, err := parseAuthParams(rest)
	if err != nil {
		return Challenge{}, err
	}
	ch := Challenge{Scheme: strings.ToLower(scheme), Realm: params["realm"], Nonce: params["nonce"], Opaque: params["opaque"]}
	for q := range strings.SplitSeq(params["qop"], ",") {
		if strings.TrimSpace(q) == "auth" {
			ch.QOP = "auth"
		}
	}
	switch ch.Scheme {
	case "basic":
	case "digest":
		if ch.Nonce == "" {
			return ch, errorf(StatusBadRequest, "Digest challenge without nonce")
		}
	default:
		return ch, errorf(StatusBadRequest, "unsupported authentication scheme %q", truncate(scheme))
	}
	return ch, nil
}

// Authorization returns the Authorization header answering the challenge
// for a request (cnonce is used with qop=auth; nc is 1).
func (ch Challenge) Authorization(method, uri, user, pass, cnonce string) string {
	if ch.Scheme == "basic" {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
	}
	ha1 := DigestHA1(user, ch.Realm, pass)
	var b strings.Builder
	b.WriteString(`Digest username="` + quoteEscape(user) + `", realm="` + quoteEscape(ch.Realm) +
		`", nonce="` + quoteEscape(ch.Nonce) + `", uri="` + quoteEscape(uri) + `"`)
	if ch.QOP == "auth" {
		const nc = "00000001"
		b.WriteString(`, qop=auth, nc=` + nc + `, cnonce="` + quoteEscape(cnonce) + `"`)
		b.WriteString(`, response="` + DigestResponse(ha1, method, uri, ch.Nonce, "auth", nc, cnonce) + `"`)
	} else {
		b.WriteString(`, response="` + DigestResponse(ha1, method, uri, ch.Nonce, "", "", "") + `"`)
	}
	if ch.Opaque != "" {
		b.WriteString(`, opaque="` + quoteEscape(ch.Opaque) + `"`)
	}
	return b.String()
}

func quoteEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s)
}

// parseAuthParams parses comma-separated name=value pairs whose values may
// be quoted strings with escapes (RFC 7235 auth-param).
func parseAuthParams(s string) (map[string]string, error) {
	out := map[string]string{}
	i := 0
	for i < len(s) {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == ',') {
			i++
		}
		if i >= len(s) {
			break
		}
		start := i
		for i < len(s) && s[i] != '=' && s[i] != ',' {
			i++
		}
		name := strings.ToLower(strings.TrimSpace(s[start:i]))
		if i >= len(s) || s[i] != '=' {
			if name == "" {
				continue
			}
			out[name] = ""
			continue
		}
		i++ // '='
		for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
			i++
		}
		var val strings.Builder
		if i < len(s) && s[i] == '"' {
			i++
			closed := false
			for i < len(s) {
				c := s[i]
				if c == '\\' && i+1 < len(s) {
					val.WriteByte(s[i+1])
					i += 2
					continue
				}
				if c == '"' {
					closed = true
					i++
					break
				}
				val.WriteByte(c)
				i++
			}
			if !closed {
				return nil, errorf(StatusBadRequest, "unterminated quoted string in authentication parameters")
			}
		} else {
			start := i
			for i < len(s) && s[i] != ',' {
				i++
			}
			val.WriteString(strings.TrimSpace(s[start:i]))
		}
		if len(out) >= 32 {
			return nil, errorf(StatusBadRequest, "too many authentication parameters")
		}
		out[name] = val.String()
	}
	return out, nil
}
