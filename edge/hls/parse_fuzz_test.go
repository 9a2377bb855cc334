package hls

import (
	"net/url"
	"strconv"
	"testing"
)

// FuzzParseMediaName: any file name either parses into a known kind with
// the right number of fields, which print back to the same name, or is
// refused; it never panics.
func FuzzParseMediaName(f *testing.F) {
	for _, s := range []string{"init-ab12-1", "seg-ab12-7", "part-ab12-7-3", "part-ab12-7", "seg--1", "x-y-z", "", "-", "part-a-1-2-3", "seg-a-18446744073709551616"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		kind, token, nums, ok := parseMediaName(name)
		if !ok {
			return
		}
		want := map[string]int{"init": 1, "seg": 1, "part": 2}[kind]
		if want == 0 || len(nums) != want || token == "" {
			t.Fatalf("%q → %q %q %v", name, kind, token, nums)
		}
		back := kind + "-" + token
		for _, n := range nums {
			back += "-" + strconv.FormatUint(n, 10)
		}
		if back != name {
			// Leading zeros or '+' signs parse too; the numbers must agree.
			k2, t2, n2, ok2 := parseMediaName(back)
			if !ok2 || k2 != kind || t2 != token || len(n2) != len(nums) {
				t.Fatalf("%q → %q does not parse back", name, back)
			}
		}
	})
}

// FuzzParseBlocking: the blocking reload parameters are accepted only as
// numbers, _HLS_part only with _HLS_msn.
func FuzzParseBlocking(f *testing.F) {
	for _, s := range []string{"_HLS_msn=3&_HLS_part=1", "_HLS_part=1", "_HLS_msn=x", "_HLS_msn=-1", "_HLS_msn=99999999999999999999", "", "_HLS_skip=YES", "_HLS_msn=1&_HLS_part=2147483648"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, query string) {
		q, err := url.ParseQuery(query)
		if err != nil {
			return
		}
		msn, part, err := parseBlocking(q)
		if err != nil {
			if msn != -1 || part != -1 {
				t.Fatalf("error with values %d %d", msn, part)
			}
			return
		}
		if part >= 0 && msn < 0 {
			t.Fatalf("%q: part %d without msn", query, part)
		}
		if (q.Get("_HLS_msn") != "") != (msn >= 0) {
			t.Fatalf("%q: msn %d", query, msn)
		}
	})
}
