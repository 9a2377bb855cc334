package groups

import (
	"fmt"
	"strings"
)

// GlobalID is the id of the group every profile belongs to.
const GlobalID = "global"

// MaxGroupIDLen bounds custom group ids.
const MaxGroupIDLen = 64

// Group is a named predicate. Automatic groups (global and attr:value) exist
// implicitly; custom groups are defined explicitly and must have ids that
// cannot be mistaken for automatic ones.
type Group struct {
	ID   string     `json:"id"`
	Pred *Predicate `json:"predicate"`
}

// AutoID returns the automatic group id for attr=value, e.g. "country:BR".
func AutoID(attr, value string) string { return attr + ":" + value }

// AutoGroup returns the automatic group an id names: "global" (every profile)
// or "attr:value" with a valid attribute name and a non-empty value. The
// predicate is implied by the id.
func AutoGroup(id string) (Group, bool) {
	if id == GlobalID {
		return Group{ID: id, Pred: True()}, true
	}
	attr, value, ok := SplitAutoID(id)
	if !ok {
		return Group{}, false
	}
	return Group{ID: id, Pred: Eq(attr, value)}, true
}

// SplitAutoID splits "attr:value" into its parts if it is an automatic group id.
func SplitAutoID(id string) (attr, value string, ok bool) {
	attr, value, ok = strings.Cut(id, ":")
	if !ok || value == "" || len(value) > MaxAttrValueLen || !ValidAttrName(attr) {
		return "", "", false
	}
	return attr, value, true
}

// ValidCustomID checks an id for a custom group: 1–64 characters of
// [A-Za-z0-9_.-], and not "global".
func ValidCustomID(id string) error {
	if id == "" || len(id) > MaxGroupIDLen {
		return fmt.Errorf("group id must be 1–%d characters", MaxGroupIDLen)
	}
	if id == GlobalID {
		return fmt.Errorf("group id %q is reserved", id)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return fmt.Errorf("group id %q: only letters, digits, '_', '.' and '-' are allowed", id)
		}
	}
	return nil
}
