// Package geotest writes small GeoIP2-schema databases for tests.
package geotest

import (
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

// FixtureCity is one network of a test City database.
type FixtureCity struct {
	Network     string // CIDR
	Country     string // ISO code
	Continent   string
	Subdivision string // ISO code
	City        string // English name
	Lat, Lon    float64
}

// FixtureASN is one network of a test ASN database.
type FixtureASN struct {
	Network string
	ASN     uint32
	Org     string
}

// WriteFixtures writes small GeoIP2-schema City and ASN databases into dir
// and returns their paths. Tests of every tier use them to get real
// lookups without MaxMind's files; reserved ranges (127/8, 10/8, …) are
// allowed so loopback clients can be placed anywhere.
func WriteFixtures(dir string, cities []FixtureCity, asns []FixtureASN) (cityPath, asnPath string, err error) {
	city, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: "GeoIP2-City", RecordSize: 28, IncludeReservedNetworks: true})
	if err != nil {
		return "", "", err
	}
	for _, c := range cities {
		_, n, err := net.ParseCIDR(c.Network)
		if err != nil {
			return "", "", err
		}
		rec := mmdbtype.Map{
			"country":   mmdbtype.Map{"iso_code": mmdbtype.String(c.Country), "names": mmdbtype.Map{"en": mmdbtype.String(c.Country)}},
			"continent": mmdbtype.Map{"code": mmdbtype.String(c.Continent)},
			"location":  mmdbtype.Map{"latitude": mmdbtype.Float64(c.Lat), "longitude": mmdbtype.Float64(c.Lon)},
		}
		if c.City != "" {
			rec["city"] = mmdbtype.Map{"names": mmdbtype.Map{"en": mmdbtype.String(c.City)}}
		}
		if c.Subdivision != "" {
			rec["subdivisions"] = mmdbtype.Slice{mmdbtype.Map{"iso_code": mmdbtype.String(c.Subdivision)}}
		}
		if err := city.Insert(n, rec); err != nil {
			return "", "", fmt.Errorf("insert %s: %w", c.Network, err)
		}
	}
	asn, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: "GeoLite2-ASN", RecordSize: 28, IncludeReservedNetworks: true})
	if err != nil {
		return "", "", err
	}
	for _, a := range asns {
		_, n, err := net.ParseCIDR(a.Network)
		if err != nil {
			return "", "", err
		}
		if err := asn.Insert(n, mmdbtype.Map{
			"autonomous_system_number":       mmdbtype.Uint32(a.ASN),
			"autonomous_system_organization": mmdbtype.String(a.Org),
		}); err != nil {
			return "", "", fmt.Errorf("insert %s: %w", a.Network, err)
		}
	}
	cityPath, asnPath = filepath.Join(dir, "city.mmdb"), filepath.Join(dir, "asn.mmdb")
	for path, tree := range map[string]*mmdbwriter.Tree{cityPath: city, asnPath: asn} {
		f, err := os.Create(path)
		if err != nil {
			return "", "", err
		}
		if _, err := tree.WriteTo(f); err != nil {
			f.Close()
			return "", "", err
		}
		if err := f.Close(); err != nil {
			return "", "", err
		}
	}
	return cityPath, asnPath, nil
}
