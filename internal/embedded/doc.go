// Package embedded runs a nats-server with JetStream inside the process: the default for
// cmd/coordinator and jetflow demo, and the broker of every test.
package embedded
