package media

import (
	"strings"
	"testing"
)

func TestValidStreamName(t *testing.T) {
	for name, want := range map[string]bool{
		"cup-final":             true,
		"a":                     true,
		"A_b.c-9":               true,
		strings.Repeat("x", 64): true,
		strings.Repeat("x", 65): false,
		"":                      false,
		"a/b":                   false,
		"a b":                   false,
		"é":                     false,
		"a?key=1":               false,
		"..%2f":                 false,
		"stream\x00":            false,
	} {
		if got := ValidStreamName(name); got != want {
			t.Errorf("ValidStreamName(%q) = %v, want %v", name, got, want)
		}
	}
}
