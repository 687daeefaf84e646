// Package topology creates, idempotently, the JetStream streams, KV buckets and object store that
// jetflow runs on. Every service calls Provision at start, so any of them may be first.
package topology
