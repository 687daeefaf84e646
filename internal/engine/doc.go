// Package engine is the replay machinery behind the durable SDK: one Invocation per run of a
// handler, holding the execution's checkpoints, and the Context that handlers receive. The
// durable package is its public face; workers drive it. Nothing here is exported to handler
// authors.
//
// An invocation replays from the top: an operation whose checkpoint is terminal returns the stored
// outcome; the first one without runs for real. When the invocation cannot go on (a timer not yet
// due), it records what it waits for and ends the handler's goroutine with runtime.Goexit, which
// no recover can swallow. A non-determinism found during replay poisons the invocation: whatever
// the handler does next, it ends as a failed execution.
package engine
