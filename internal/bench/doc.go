// Package bench runs the workloads of BENCH.md against a jetflow system in this process (an
// embedded NATS server, or one given by URL), for `jetflow bench`. It reports figures; it asserts
// nothing about speed.
package bench
