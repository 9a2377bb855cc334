// Package uaparse derives a viewer's device class, operating system and
// browser from the User-Agent string and, when the browser sent them, the
// Sec-CH-UA* client hints. It wraps a maintained parser
// (github.com/mileusna/useragent) and adds rules where that parser falls
// short: smart TVs and set-top boxes, command-line clients, and
// Chromium-based browsers that only identify themselves in client hints.
// Values are lower-case slugs suitable as group attribute values.
package uaparse

import (
	"strings"

	"github.com/mileusna/useragent"
)

// Device classes, as the design's contracts list them.
const (
	Desktop = "desktop"
	Mobile  = "mobile"
	Tablet  = "tablet"
	TV      = "tv"
	Bot     = "bot"
	Unknown = "unknown"
	Other   = "other"
)

// Info is what a User-Agent says about the viewer's device.
type Info struct {
	Device  string // desktop|mobile|tablet|tv|bot|unknown
	OS      string // windows, macos, ios, android, linux, chromeos, tizen, webos, …, other, unknown
	Browser string // chrome, safari, firefox, edge, opera, samsung, …, other, unknown
}

// Parse classifies a User-Agent. hints are Sec-CH-UA* request headers with
// lower-case names (sec-ch-ua, sec-ch-ua-mobile, sec-ch-ua-platform, …);
// nil is fine. When hints are present they win over the UA string, which
// Chromium freezes to a generic value.
func Parse(ua string, hints map[string]string) Info {
	ua = strings.TrimSpace(ua)
	if ua == "" && len(hints) == 0 {
		return Info{Device: Unknown, OS: Unknown, Browser: Unknown}
	}
	p := useragent.Parse(ua)
	l := strings.ToLower(ua)
	info := Info{Device: deviceOf(p, l), OS: osOf(p, l), Browser: browserOf(p, l)}

	if platform := unquote(hints["sec-ch-ua-platform"]); platform != "" {
		if os := normalizeOS(platform); os != Other {
			info.OS = os
		}
	}
	switch hints["sec-ch-ua-mobile"] {
	case "?1":
		if info.Device == Desktop || info.Device == Unknown {
			info.Device = Mobile
		}
	case "?0":
		if info.Device == Unknown {
			info.Device = Desktop
		}
	}
	if b := brandOf(hints["sec-ch-ua"]); b != "" {
		info.Browser = b
	}
	if ua == "" {
		if info.OS == Other {
			info.OS = Unknown
		}
		if info.Browser == Other {
			info.Browser = Unknown
		}
	}
	return info
}

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// tvMarkers identify smart TVs, streaming sticks and set-top boxes, which
// the parser reports as desktops or mobiles.
var tvMarkers = []string{
	"smart-tv", "smarttv", "smart tv", "tizen", "web0s", "webos", "netcast", "appletv", "apple tv",
	"crkey", "android tv", "googletv", "google tv", "bravia", "hbbtv", "roku", "aftb", "aftm",
	"aftt", "afts", "aftka", "fire tv", "philipstv", "vidaa", "xbox", "playstation", "nintendo",
}

// botMarkers identify automated clients the parser misses.
var botMarkers = []string{
	"bot", "crawler", "spider", "curl/", "wget/", "python-requests", "python-urllib", "go-http-client",
	"okhttp", "java/", "libwww", "httpclient", "headlesschrome/0", "scrapy", "facebookexternalhit", "slurp",
}

func deviceOf(p useragent.UserAgent, l string) string {
	switch {
	case l == "":
		return Unknown
	case containsAny(l, tvMarkers...):
		return TV
	case (p.Bot && !strings.Contains(l, "headlesschrome/")) || containsAny(l, botMarkers...):
		return Bot
	case p.Tablet || strings.Contains(l, "ipad") || strings.Contains(l, "tablet") ||
		(strings.Contains(l, "android") && !strings.Contains(l, "mobile")):
		return Tablet
	case p.Mobile || containsAny(l, "mobi", "iphone", "ipod"):
		return Mobile
	case p.Desktop:
		return Desktop
	case strings.HasPrefix(l, "mozilla/"):
		return Desktop
	}
	return Unknown
}

func osOf(p useragent.UserAgent, l string) string {
	switch {
	case strings.Contains(l, "tizen"):
		return "tizen"
	case containsAny(l, "web0s", "webos", "netcast"):
		return "webos"
	case containsAny(l, "appletv", "apple tv", "tvos"):
		return "tvos"
	case strings.Contains(l, "roku"):
		return "roku"
	case strings.Contains(l, "cros"):
		return "chromeos"
	}
	if p.OS == "" {
		if l == "" {
			return Unknown
		}
		return Other
	}
	return normalizeOS(p.OS)
}

func normalizeOS(name string) string {
	switch strings.ToLower(strings.TrimSpace(name)) {
	case "windows", "windows nt", "windows phone", "windows phone os":
		return "windows"
	case "macos", "mac os x", "mac os", "macintosh":
		return "macos"
	case "ios", "ipados":
		return "ios"
	case "android":
		return "android"
	case "linux", "ubuntu", "fedora", "debian":
		return "linux"
	case "chromeos", "chrome os", "chromium os":
		return "chromeos"
	case "tizen":
		return "tizen"
	case "webos":
		return "webos"
	case "freebsd", "openbsd", "netbsd":
		return "bsd"
	}
	return Other
}

func browserOf(p useragent.UserAgent, l string) string {
	switch {
	case l == "":
		return Unknown
	case strings.Contains(l, "edg/") || strings.Contains(l, "edga/") || strings.Contains(l, "edgios/"):
		return "edge"
	case strings.Contains(l, "samsungbrowser"):
		return "samsung"
	case strings.Contains(l, "opr/") || strings.Contains(l, "opera"):
		return "opera"
	case strings.Contains(l, "yabrowser"):
		return "yandex"
	case strings.Contains(l, "firefox/") || strings.Contains(l, "fxios"):
		return "firefox"
	case strings.Contains(l, "silk/"):
		return "silk"
	case containsAny(l, "chrome/", "crios/", "chromium/"):
		return "chrome"
	}
	switch p.Name {
	case useragent.Chrome:
		return "chrome"
	case useragent.Safari:
		return "safari"
	case useragent.Firefox:
		return "firefox"
	case useragent.Edge:
		return "edge"
	case useragent.Opera, useragent.OperaMini, useragent.OperaTouch:
		return "opera"
	case "":
		return Other
	}
	name := strings.ToLower(p.Name)
	switch {
	case strings.Contains(name, "safari"):
		return "safari"
	case strings.ContainsAny(name, "0123456789"):
		// A device model or build string, not a browser name.
		return Other
	}
	return slug(name)
}

// brandOf picks the most specific brand from Sec-CH-UA, e.g.
// `"Chromium";v="124", "Microsoft Edge";v="124", "Not-A.Brand";v="99"`.
func brandOf(h string) string {
	if h == "" {
		return ""
	}
	l := strings.ToLower(h)
	switch {
	case strings.Contains(l, "microsoft edge"):
		return "edge"
	case strings.Contains(l, "opera"):
		return "opera"
	case strings.Contains(l, "samsung internet"):
		return "samsung"
	case strings.Contains(l, "yandex"):
		return "yandex"
	case strings.Contains(l, "brave"):
		return "brave"
	case strings.Contains(l, "google chrome"), strings.Contains(l, "chromium"):
		return "chrome"
	}
	return ""
}

func unquote(s string) string { return strings.Trim(strings.TrimSpace(s), `"`) }

// slug lower-cases a name and keeps [a-z0-9-], so it is a clean attribute
// value.
func slug(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		case r == ' ' || r == '-' || r == '_' || r == '.':
			if b.Len() > 0 && !strings.HasSuffix(b.String(), "-") {
				b.WriteByte('-')
			}
		}
		if b.Len() >= 32 {
			break
		}
	}
	out := strings.Trim(b.String(), "-")
	if out == "" {
		return Other
	}
	return out
}
