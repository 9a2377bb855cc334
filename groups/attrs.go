package groups

import (
	"fmt"
	"strings"
)

// Profile attribute names, exactly as the design's contracts list them. The
// application tier may also set any attribute named x-<name>.
const (
	AttrStream      = "stream"
	AttrCountry     = "country"
	AttrSubdivision = "subdivision"
	AttrCity        = "city"
	AttrContinent   = "continent"
	AttrASN         = "asn"
	AttrISP         = "isp"
	AttrDevice      = "device" // desktop|mobile|tablet|tv|bot
	AttrOS          = "os"
	AttrBrowser     = "browser"
	AttrLang        = "lang"
	AttrEdge        = "edge"
	AttrConn        = "conn" // connection server id
)

// KnownAttrs lists the built-in attribute names in a stable order.
var KnownAttrs = []string{
	AttrStream, AttrCountry, AttrSubdivision, AttrCity, AttrContinent, AttrASN,
	AttrISP, AttrDevice, AttrOS, AttrBrowser, AttrLang, AttrEdge, AttrConn,
}

// Limits on names and values, so that an attribute can always be carried in a
// group id and a bus message without surprises.
const (
	MaxAttrNameLen  = 64
	MaxAttrValueLen = 256
)

// Attrs are a profile's attributes: name → value. A missing name and an
// empty value mean the same thing: the attribute is not set.
type Attrs map[string]string

// Clone returns a copy of a that shares nothing with it.
func (a Attrs) Clone() Attrs {
	c := make(Attrs, len(a))
	for k, v := range a {
		c[k] = v
	}
	return c
}

// ValidAttrName reports whether name is a built-in attribute or an x-*
// extension attribute (lower-case letters, digits, '-' and '_').
func ValidAttrName(name string) bool {
	for _, k := range KnownAttrs {
		if name == k {
			return true
		}
	}
	if !strings.HasPrefix(name, "x-") || len(name) < 3 || len(name) > MaxAttrNameLen {
		return false
	}
	for i := 2; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// CheckAttrs returns an error naming the first attribute whose name or value
// is not acceptable.
func CheckAttrs(a Attrs) error {
	for k, v := range a {
		if !ValidAttrName(k) {
			return fmt.Errorf("groups: unknown attribute %q", k)
		}
		if len(v) > MaxAttrValueLen {
			return fmt.Errorf("groups: value of attribute %q longer than %d bytes", k, MaxAttrValueLen)
		}
	}
	return nil
}
