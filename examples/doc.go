// Package examples holds the handlers that cmd/worker registers and `jetflow demo` runs: small,
// complete workflows that show each durable operation.
package examples
