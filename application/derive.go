package application

import (
	"strings"

	"github.com/backchannel/backchannel/groups"
	"github.com/backchannel/backchannel/internal/control"
)

// Unknown is the value of an attribute that cannot be derived yet.
const Unknown = "unknown"

// deriveAttrs turns a link's raw facts into profile attributes. Geography is
// a placeholder until GeoIP databases are wired in; device, OS and browser
// come from client hints when the browser sent them, else from a few
// User-Agent patterns (a UA parser library replaces them later).
func deriveAttrs(f *groups.Facts) groups.Attrs {
	var hello control.Hello
	if len(f.Hello) > 0 {
		if m, err := control.DecodeClient(f.Hello); err == nil && m.Hello != nil {
			hello = *m.Hello
		}
	}
	ua := f.UserAgent
	if ua == "" {
		ua = hello.UA
	}
	a := groups.Attrs{
		groups.AttrCountry:     Unknown,
		groups.AttrSubdivision: Unknown,
		groups.AttrCity:        Unknown,
		groups.AttrContinent:   Unknown,
		groups.AttrASN:         Unknown,
		groups.AttrISP:         Unknown,
		groups.AttrDevice:      deviceOf(ua, f.ClientHints),
		groups.AttrOS:          osOf(ua, f.ClientHints),
		groups.AttrBrowser:     browserOf(ua),
		groups.AttrLang:        langOf(hello.Lang, f.AcceptLanguage),
	}
	return a
}

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

func deviceOf(ua string, hints map[string]string) string {
	l := strings.ToLower(ua)
	switch {
	case containsAny(l, "bot", "crawler", "spider", "curl/", "wget/"):
		return "bot"
	case containsAny(l, "smart-tv", "smarttv", "tizen", "web0s", "webos", "appletv", "crkey", "android tv", "bravia", "hbbtv"):
		return "tv"
	case containsAny(l, "ipad", "tablet") || (strings.Contains(l, "android") && !strings.Contains(l, "mobile")):
		return "tablet"
	case hints["sec-ch-ua-mobile"] == "?1" || containsAny(l, "mobi", "iphone", "ipod", "android"):
		return "mobile"
	case ua == "":
		return Unknown
	}
	return "desktop"
}

func osOf(ua string, hints map[string]string) string {
	if p := strings.ToLower(strings.Trim(hints["sec-ch-ua-platform"], `"`)); p != "" {
		switch p {
		case "windows", "android", "ios", "linux", "chrome os", "chromeos":
			return strings.ReplaceAll(p, " ", "")
		case "macos":
			return "macos"
		}
	}
	switch {
	case containsAny(ua, "iPhone", "iPad", "iPod"):
		return "ios"
	case strings.Contains(ua, "Android"):
		return "android"
	case strings.Contains(ua, "Windows"):
		return "windows"
	case strings.Contains(ua, "CrOS"):
		return "chromeos"
	case containsAny(ua, "Mac OS X", "Macintosh"):
		return "macos"
	case strings.Contains(ua, "Linux"):
		return "linux"
	case ua == "":
		return Unknown
	}
	return "other"
}

func browserOf(ua string) string {
	switch {
	case strings.Contains(ua, "Edg/"):
		return "edge"
	case containsAny(ua, "OPR/", "Opera"):
		return "opera"
	case strings.Contains(ua, "SamsungBrowser"):
		return "samsung"
	case containsAny(ua, "Firefox/", "FxiOS"):
		return "firefox"
	case containsAny(ua, "Chrome/", "CriOS", "Chromium"):
		return "chrome"
	case strings.Contains(ua, "Safari/"):
		return "safari"
	case ua == "":
		return Unknown
	}
	return "other"
}

// langOf returns the primary language subtag, lower-case: the player's
// navigator.language first, else the first Accept-Language entry.
func langOf(helloLang, acceptLanguage string) string {
	tag := helloLang
	if tag == "" {
		tag, _, _ = strings.Cut(acceptLanguage, ",")
		tag, _, _ = strings.Cut(tag, ";")
	}
	tag, _, _ = strings.Cut(strings.TrimSpace(tag), "-")
	tag = strings.ToLower(tag)
	if tag == "" || tag == "*" || len(tag) > 8 {
		return Unknown
	}
	for i := 0; i < len(tag); i++ {
		if tag[i] < 'a' || tag[i] > 'z' {
			return Unknown
		}
	}
	return tag
}
