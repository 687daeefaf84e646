// Package recent keeps a bounded set of recently seen strings, safe for concurrent use: the
// executions a service has seen stopped, say. Past its capacity the oldest entry goes.
package recent

import "sync"

// Set is a bounded set of strings. The zero value is not usable; use New.
type Set struct {
	mu    sync.Mutex
	m     map[string]struct{}
	order []string // ring of insertion order
	next  int
}

// New returns a set that holds at most capacity entries (at least 1).
func New(capacity int) *Set {
	capacity = max(capacity, 1)
	return &Set{m: make(map[string]struct{}, capacity), order: make([]string, 0, capacity)}
}

// Add puts s in the set, evicting the oldest entry if the set is full.
func (r *Set) Add(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.m[s]; ok {
		return
	}
	if len(r.order) < cap(r.order) {
		r.order = append(r.order, s)
	} else {
		delete(r.m, r.order[r.next])
		r.order[r.next] = s
		r.next = (r.next + 1) % len(r.order)
	}
	r.m[s] = struct{}{}
}

// Has reports whether s is in the set.
func (r *Set) Has(s string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.m[s]
	return ok
}
