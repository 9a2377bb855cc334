// Package application is the application server: it assigns users to groups,
// picks edges, aggregates telemetry per group, pushes stream status and other
// messages, and serves the REST API under /api/v1.
package application
