// Package coordinator runs the execution lifecycle: it consumes the events that clients, workers
// and timers publish, folds each into the execution's state with the pure lifecycle.Decide, stores
// the state with compare-and-set, carries out the effects (dispatching invocations, scheduling
// timers, marking timers due) with deduplication ids, and only then acks the event.
//
// It also serves durable timers: a timer waits in the timer stream, redelivered with a delay
// until it is due, and then becomes a TimerFired event. See docs/DESIGN.md for the subjects and
// records.
package coordinator
