package geo

import (
	"github.com/backchannel/backchannel/internal/geo/geotest"
	"os"
	"path/filepath"
	"testing"
)

func fixtures(t *testing.T) (string, string) {
	t.Helper()
	c, a, err := geotest.WriteFixtures(t.TempDir(), []geotest.FixtureCity{
		{Network: "127.0.0.0/24", Country: "BR", Continent: "SA", Subdivision: "SP", City: "São Paulo", Lat: -23.55, Lon: -46.63},
		{Network: "127.0.1.0/24", Country: "DE", Continent: "EU", Subdivision: "BE", City: "Berlin", Lat: 52.52, Lon: 13.40},
		{Network: "2001:db8::/32", Country: "JP", Continent: "AS"},
	}, []geotest.FixtureASN{
		{Network: "127.0.0.0/24", ASN: 28573, Org: "Claro NXT"},
		{Network: "127.0.1.0/24", ASN: 3320, Org: "Deutsche Telekom AG"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return c, a
}

func TestLookupFromFixtures(t *testing.T) {
	c, a := fixtures(t)
	l, err := Open(c, a)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cases := map[string]Location{
		"127.0.0.9":        {Country: "BR", Subdivision: "SP", City: "São Paulo", Continent: "SA", ASN: "AS28573", ISP: "Claro NXT", Lat: -23.55, Lon: -46.63, HasCoords: true},
		"127.0.1.200":      {Country: "DE", Subdivision: "BE", City: "Berlin", Continent: "EU", ASN: "AS3320", ISP: "Deutsche Telekom AG", Lat: 52.52, Lon: 13.40, HasCoords: true},
		"::ffff:127.0.1.1": {Country: "DE", Subdivision: "BE", City: "Berlin", Continent: "EU", ASN: "AS3320", ISP: "Deutsche Telekom AG", Lat: 52.52, Lon: 13.40, HasCoords: true},
		"2001:db8::1":      {Country: "JP", Subdivision: Unknown, City: Unknown, Continent: "AS", ASN: Unknown, ISP: Unknown, HasCoords: true},
		"127.0.2.1":        unknown(),
		"not an ip":        unknown(),
		"":                 unknown(),
	}
	for ip, want := range cases {
		if got := l.Lookup(ip); got != want {
			t.Errorf("%q: got %+v, want %+v", ip, got, want)
		}
	}
}

func TestWithoutDatabases(t *testing.T) {
	var nilLoc *Locator
	if nilLoc.Enabled() || nilLoc.Lookup("8.8.8.8") != unknown() || nilLoc.Close() != nil {
		t.Fatal("nil locator must answer unknown")
	}
	l, err := Open("", "")
	if err != nil || l.Enabled() || l.Lookup("127.0.0.1").Country != Unknown {
		t.Fatalf("%v %v", l, err)
	}
}

func TestOpenErrors(t *testing.T) {
	c, a := fixtures(t)
	if _, err := Open(a, ""); err == nil {
		t.Error("an ASN database accepted as City")
	}
	if _, err := Open("", c); err == nil {
		t.Error("a City database accepted as ASN")
	}
	if _, err := Open(filepath.Join(t.TempDir(), "missing.mmdb"), ""); err == nil {
		t.Error("missing file accepted")
	}
	junk := filepath.Join(t.TempDir(), "junk.mmdb")
	os.WriteFile(junk, []byte("not a database"), 0o600)
	if _, err := Open(junk, ""); err == nil {
		t.Error("junk accepted")
	}
}

func FuzzLookup(f *testing.F) {
	c, a, err := geotest.WriteFixtures(f.TempDir(), []geotest.FixtureCity{{Network: "127.0.0.0/24", Country: "BR", Continent: "SA"}}, nil)
	if err != nil {
		f.Fatal(err)
	}
	l, err := Open(c, a)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { l.Close() })
	f.Add("127.0.0.1")
	f.Add("::1")
	f.Add("1.2.3.4%eth0")
	f.Fuzz(func(t *testing.T, ip string) {
		loc := l.Lookup(ip)
		if loc.Country == "" || loc.ASN == "" {
			t.Fatalf("empty dimension for %q: %+v", ip, loc)
		}
	})
}
