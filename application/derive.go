package application

import (
	"strings"

	"github.com/backchannel/backchannel/groups"
	"github.com/backchannel/backchannel/internal/control"
	"github.com/backchannel/backchannel/internal/geo"
	"github.com/backchannel/backchannel/internal/uaparse"
)

// Unknown is the value of an attribute that cannot be derived.
const Unknown = "unknown"

// deriveAttrs turns a link's raw facts into profile attributes: geography
// from the GeoIP databases (Unknown without them), device, OS and browser
// from the User-Agent and client hints, language from the hello or
// Accept-Language.
func deriveAttrs(loc *geo.Locator, f *groups.Facts) groups.Attrs {
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
	g := loc.Lookup(f.IP)
	dev := uaparse.Parse(ua, f.ClientHints)
	return groups.Attrs{
		groups.AttrCountry:     attrValue(g.Country),
		groups.AttrSubdivision: attrValue(g.Subdivision),
		groups.AttrCity:        attrValue(g.City),
		groups.AttrContinent:   attrValue(g.Continent),
		groups.AttrASN:         attrValue(g.ASN),
		groups.AttrISP:         attrValue(g.ISP),
		groups.AttrDevice:      dev.Device,
		groups.AttrOS:          dev.OS,
		groups.AttrBrowser:     dev.Browser,
		groups.AttrLang:        langOf(hello.Lang, f.AcceptLanguage),
	}
}

// attrValue keeps a database value within the attribute limits.
func attrValue(v string) string {
	if v == "" {
		return Unknown
	}
	if len(v) > groups.MaxAttrValueLen {
		v = v[:groups.MaxAttrValueLen]
	}
	return v
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
