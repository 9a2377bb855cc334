// Package geo locates viewers by IP address in the operator's MaxMind
// databases (GeoIP2/GeoLite2 City and ASN, mmdb files). Without databases,
// or for addresses they do not know (loopback, private ranges), every
// dimension is "unknown" and nothing else changes.
package geo

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/oschwald/geoip2-golang/v2"
)

// Unknown is the value of a dimension that could not be determined.
const Unknown = "unknown"

// Location is what the databases say about one address. Codes are the
// databases' own: ISO 3166-1 country, ISO 3166-2 subdivision (without the
// country prefix), continent code; City is the English name; ASN is "AS"
// followed by the number.
type Location struct {
	Country     string
	Subdivision string
	City        string
	Continent   string
	ASN         string
	ISP         string // the AS organisation
	Lat, Lon    float64
	HasCoords   bool
}

// unknown returns a Location with every dimension Unknown.
func unknown() Location {
	return Location{Country: Unknown, Subdivision: Unknown, City: Unknown, Continent: Unknown, ASN: Unknown, ISP: Unknown}
}

// Locator looks addresses up. The zero value and a nil *Locator answer
// Unknown for everything. A Locator is safe for concurrent use.
type Locator struct {
	city *geoip2.Reader
	asn  *geoip2.Reader
}

// Open opens the City and ASN databases; either path may be empty.
func Open(cityPath, asnPath string) (*Locator, error) {
	l := &Locator{}
	var err error
	if cityPath != "" {
		if l.city, err = geoip2.Open(cityPath); err != nil {
			return nil, fmt.Errorf("geo: city database %s: %w", cityPath, err)
		}
		if t := l.city.Metadata().DatabaseType; !strings.Contains(t, "City") {
			l.city.Close()
			return nil, fmt.Errorf("geo: %s is a %s database, not a City one", cityPath, t)
		}
	}
	if asnPath != "" {
		if l.asn, err = geoip2.Open(asnPath); err != nil {
			l.Close()
			return nil, fmt.Errorf("geo: ASN database %s: %w", asnPath, err)
		}
		if t := l.asn.Metadata().DatabaseType; !strings.Contains(t, "ASN") {
			l.Close()
			return nil, fmt.Errorf("geo: %s is a %s database, not an ASN one", asnPath, t)
		}
	}
	return l, nil
}

// Close releases the databases.
func (l *Locator) Close() error {
	if l == nil {
		return nil
	}
	var errs []error
	if l.city != nil {
		errs = append(errs, l.city.Close())
	}
	if l.asn != nil {
		errs = append(errs, l.asn.Close())
	}
	return errors.Join(errs...)
}

// Enabled reports whether any database is loaded.
func (l *Locator) Enabled() bool { return l != nil && (l.city != nil || l.asn != nil) }

// Lookup locates ip (a textual IPv4 or IPv6 address). Anything it cannot
// tell is Unknown.
func (l *Locator) Lookup(ip string) Location {
	loc := unknown()
	if !l.Enabled() {
		return loc
	}
	addr, err := netip.ParseAddr(strings.TrimSpace(ip))
	if err != nil {
		return loc
	}
	addr = addr.Unmap()
	if l.city != nil {
		if c, err := l.city.City(addr); err == nil && c.HasData() {
			setIf(&loc.Country, c.Country.ISOCode)
			setIf(&loc.Continent, c.Continent.Code)
			setIf(&loc.City, c.City.Names.English)
			if len(c.Subdivisions) > 0 {
				setIf(&loc.Subdivision, c.Subdivisions[0].ISOCode)
			}
			if c.Location.HasCoordinates() {
				loc.Lat, loc.Lon, loc.HasCoords = *c.Location.Latitude, *c.Location.Longitude, true
			}
		}
	}
	if l.asn != nil {
		if a, err := l.asn.ASN(addr); err == nil && a.AutonomousSystemNumber != 0 {
			loc.ASN = "AS" + strconv.FormatUint(uint64(a.AutonomousSystemNumber), 10)
			setIf(&loc.ISP, a.AutonomousSystemOrganization)
		}
	}
	return loc
}

func setIf(dst *string, v string) {
	if v = strings.TrimSpace(v); v != "" {
		if len(v) > 128 {
			v = v[:128]
		}
		*dst = v
	}
}
