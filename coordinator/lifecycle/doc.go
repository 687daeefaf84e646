// Package lifecycle is the coordinator's decision core for an execution's lifecycle: a pure
// function from (state, event) to (state, effects), with no I/O, clock or randomness.
//
// Decide is idempotent: applying an event to the state it already produced changes nothing and
// returns the same effects again. The shell relies on that: it writes the new state, then carries
// out the effects (each with a deduplication id), then acks; after a crash anywhere in between, the
// redelivered event re-creates exactly the effects that may have been lost.
package lifecycle
