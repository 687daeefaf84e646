// Package service holds what the jetflow binaries share: connecting to NATS, running an embedded
// server, and stopping gracefully on a signal.
package service
