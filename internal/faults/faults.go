// Package faults lets the project's own fault tests inject failures into the services: acks
// that are never sent (so JetStream redelivers a message that was already handled). In
// production no hook is set and every check is one atomic load.
package faults

import "sync/atomic"

// Hooks are the injection points. A nil func injects nothing.
type Hooks struct {
	// DropAck is asked before a service acks a message on subject; true drops the ack, as a crash
	// right after the work and before the ack would.
	DropAck func(subject string) bool
}

var current atomic.Pointer[Hooks]

// Set installs h (nil removes every hook) and returns a function that restores the previous ones.
func Set(h *Hooks) (restore func()) {
	prev := current.Swap(h)
	return func() { current.Store(prev) }
}

// DropAck reports whether the ack of a message on subject is to be dropped.
func DropAck(subject string) bool {
	h := current.Load()
	return h != nil && h.DropAck != nil && h.DropAck(subject)
}
