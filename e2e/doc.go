// Package e2e holds end-to-end tests of the whole embedded deployment:
// real HTTP and ICE listeners, the demo broadcast, headless Chromium as a
// viewer and as a broadcaster, Go WHIP/WHEP clients.
package e2e
