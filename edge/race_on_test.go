//go:build race

package edge_test

// raceEnabled: the race detector slows the in-process pion viewers enough
// that they drop packets of a burst; tests that count frames relax.
const raceEnabled = true
