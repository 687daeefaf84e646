// Package batch is the decision core of Parallel and Map: a pure fold of branch outcomes into a
// batch's state that says, after each one, which branches to dispatch next and whether the
// completion policy is met and why (SEMANTICS.md rules 4–12). No I/O, clock or randomness.
//
// Per-branch state is two bits (finished, failed), so a batch of 100,000 branches is 25 KB of
// state whatever its results; the results themselves live in the branch checkpoints.
package batch

import "github.com/jetflow/jetflow/messages"

// Decision is what follows an Open or an Apply.
type Decision struct {
	// DispatchFrom..DispatchTo (exclusive) are the branch indices to dispatch now, in order.
	DispatchFrom, DispatchTo int
	// Complete is set once, by the event that met the completion policy.
	Complete bool
	Reason   messages.CompletionReason
	// Early is set for the outcome of a branch this state has not dispatched yet. It happens when
	// a crash lost the state write that followed a dispatch: the shell keeps the outcome and
	// applies it again later, once the state has caught up (or the batch has completed).
	Early bool
}

// Dispatches reports how many branches to dispatch.
func (d Decision) Dispatches() int { return d.DispatchTo - d.DispatchFrom }

// Open returns the state of a new batch and its first dispatches.
func Open(executionID, function string, req messages.ParallelRequest) (*messages.Batch, Decision) {
	b := &messages.Batch{ExecutionID: executionID, Function: function, OpID: req.OpID, Path: req.Path, Via: req.Via, Config: req.Config}
	return b, decide(b)
}

// Apply folds one branch outcome into b (modifying it) and returns what follows. An outcome for a
// branch that already finished, or that arrives after completion, changes nothing (invariants 3
// and 5); one for a branch not yet dispatched changes nothing and is Early.
func Apply(b *messages.Batch, index int, failed bool) Decision {
	if b.Completed || index < 0 || Bit(b.Done, index) {
		return Decision{}
	}
	if index >= b.Next {
		return Decision{Early: true}
	}
	b.Done = SetBit(b.Done, index)
	if failed {
		b.FailedBits = SetBit(b.FailedBits, index)
		b.Failed++
	} else {
		b.Succeeded++
	}
	return decide(b)
}

// decide applies the completion tests, then the window.
func decide(b *messages.Batch) Decision {
	cfg := b.Config
	if reason, done := completion(cfg, b.Succeeded, b.Failed); done {
		b.Completed, b.Reason = true, reason
		return Decision{Complete: true, Reason: reason}
	}
	d := Decision{DispatchFrom: b.Next}
	inFlight := b.Next - b.Succeeded - b.Failed
	for b.Next < cfg.N && (cfg.MaxConcurrency <= 0 || inFlight < cfg.MaxConcurrency) {
		b.Next++
		inFlight++
	}
	d.DispatchTo = b.Next
	return d
}

// completion applies the continue test (rule 7), the complete test (rule 8) and the reason order
// (rule 10).
func completion(cfg messages.BatchConfig, succeeded, failed int) (messages.CompletionReason, bool) {
	if ToleranceExceeded(cfg, failed) {
		return messages.ReasonFailureToleranceExceeded, true
	}
	if succeeded+failed >= cfg.N {
		return messages.ReasonAllCompleted, true
	}
	if cfg.MinSuccessful != nil && succeeded >= *cfg.MinSuccessful {
		return messages.ReasonMinSuccessfulReached, true
	}
	return 0, false
}

// ToleranceExceeded is the negation of the continue test: with no threshold set, any failure;
// else failures over ToleratedFailureCount, or over ToleratedFailurePercentage of the branches
// given (strictly). MinSuccessful alone never stops a batch because of failures.
func ToleranceExceeded(cfg messages.BatchConfig, failed int) bool {
	if cfg.MinSuccessful == nil && cfg.ToleratedFailureCount == nil && cfg.ToleratedFailurePercentage == nil {
		return failed > 0
	}
	if cfg.ToleratedFailureCount != nil && failed > *cfg.ToleratedFailureCount {
		return true
	}
	if p := cfg.ToleratedFailurePercentage; p != nil && cfg.N > 0 && float64(failed)*100/float64(cfg.N) > *p {
		return true
	}
	return false
}

// Summary freezes a completed batch for its checkpoint.
func Summary(b *messages.Batch) *messages.BatchSummary {
	return &messages.BatchSummary{Reason: b.Reason, Started: b.Next, Succeeded: b.Succeeded, Failed: b.Failed,
		Done: b.Done, FailedBits: b.FailedBits}
}

// InFlight calls fn for every branch dispatched and not finished, in index order.
func InFlight(b *messages.Batch, fn func(index int)) {
	for i := range b.Next {
		if !Bit(b.Done, i) {
			fn(i)
		}
	}
}

// Bit reports bit i of a bitmap.
func Bit(bm []byte, i int) bool {
	return i/8 < len(bm) && bm[i/8]&(1<<(i%8)) != 0
}

// SetBit sets bit i, growing the bitmap as needed.
func SetBit(bm []byte, i int) []byte {
	for len(bm) <= i/8 {
		bm = append(bm, 0)
	}
	bm[i/8] |= 1 << (i % 8)
	return bm
}
