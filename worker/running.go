package worker

import (
	"context"
	"sync"

	"github.com/jetflow/jetflow/messages"
)

// runningSet tracks the invocations in progress on a worker, so that an abandon notice can
// cancel the branches of a completed batch.
type runningSet struct {
	mu   sync.Mutex
	next int
	m    map[string]map[int]runningInv // execution → id → invocation
}

type runningInv struct {
	path   []messages.BranchRef
	cancel context.CancelFunc
}

func newRunningSet() *runningSet { return &runningSet{m: map[string]map[int]runningInv{}} }

// add registers an invocation and returns its id, for remove.
func (r *runningSet) add(executionID string, path []messages.BranchRef, cancel context.CancelFunc) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	id := r.next
	r.next++
	if r.m[executionID] == nil {
		r.m[executionID] = map[int]runningInv{}
	}
	r.m[executionID][id] = runningInv{path: path, cancel: cancel}
	return id
}

// remove forgets invocation id of the execution.
func (r *runningSet) remove(executionID string, id int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.m[executionID], id)
	if len(r.m[executionID]) == 0 {
		delete(r.m, executionID)
	}
}

// cancelExecution cancels every running invocation of the execution: the handler's and every
// branch's.
func (r *runningSet) cancelExecution(executionID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, inv := range r.m[executionID] {
		inv.cancel()
	}
}

// cancelBranchesOf cancels every running invocation that is a branch of batch op (at any depth).
func (r *runningSet) cancelBranchesOf(executionID, op string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, inv := range r.m[executionID] {
		for _, ref := range inv.path {
			if ref.OpID == op {
				inv.cancel()
				break
			}
		}
	}
}
