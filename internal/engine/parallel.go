package engine

import (
	"fmt"
	"runtime/debug"
	"strconv"

	"github.com/jetflow/jetflow/messages"
)

// BranchFunc is one branch of a batch, its result in msgpack.
type BranchFunc func(*Context) ([]byte, error)

// BatchSpec is a Parallel or Map as the handler builds it.
type BatchSpec struct {
	Name     string
	Config   messages.BatchConfig // Config.N == len(Branches)
	IsMap    bool
	Flat     bool
	Branches []BranchFunc
	Names    []string
	// Placement says where the branches run (PlaceAuto: inline when few).
	Placement Placement
}

// CachedBatch is a batch's branch list kept from one replay. The branches are closures built by
// the handler; they only depend on checkpointed values, so any branch task of the batch can run
// one without replaying the handler again.
type CachedBatch struct {
	Branches []BranchFunc
	Names    []string
}

// BranchCache keeps CachedBatches by key (BatchKey). Implementations are safe for concurrent use.
type BranchCache interface {
	Get(key string) *CachedBatch
	Put(key string, b *CachedBatch)
}

// BatchKey is the cache key of the batch op of an execution. Operation ids are unique within an
// execution, so the key needs nothing of the path.
func BatchKey(executionID, op string) string { return executionID + "/" + op }

type noCache struct{}

func (noCache) Get(string) *CachedBatch  { return nil }
func (noCache) Put(string, *CachedBatch) {}

// BatchOutcome is a completed batch: its frozen summary and the branches' outcome records.
type BatchOutcome struct {
	Summary *messages.BatchSummary
	inv     *Invocation
	op      string
	// record is the batch's: Batch.Inline says where its outcomes are, and Inner holds those that
	// rode on it (riding indexes them by id, on first use).
	record *messages.Checkpoint
	riding map[string]*messages.Checkpoint
}

// Branch returns the outcome record of branch i (nil if it has none).
func (b *BatchOutcome) Branch(i int) *messages.Checkpoint {
	id := branchRecordID(b.inv.execID, b.op, i, b.record.Batch != nil && b.record.Batch.Inline)
	if len(b.record.Inner) > 0 {
		if b.riding == nil {
			b.riding = make(map[string]*messages.Checkpoint, len(b.record.Inner))
			for _, in := range b.record.Inner {
				b.riding[in.OpID] = in
			}
		}
		if in := b.riding[id]; in != nil {
			return in
		}
	}
	b.inv.fetchOutcomes(b.record)
	r := b.inv.lookup(id)
	if r == nil {
		r = b.inv.reload(id) // not in the listing: rewritten while it was read
	}
	if r == nil {
		return nil
	}
	return r.cp
}

// branchRecordID is the operation id of branch i's outcome record.
func branchRecordID(executionID, op string, i int, inline bool) string {
	if inline {
		return messages.InlineRecordID(op, i)
	}
	return messages.BranchRecordID(executionID, op, i)
}

// Parallel runs a batch. A small one (BatchSpec.Placement) runs inline, here (runInline).
// Otherwise, on the invocation that reaches it first, it asks the coordinator for the batch and
// suspends until the batch is complete. On a branch task aimed through it, it runs that branch;
// on replay of a completed batch, it returns the outcome without running anything.
func (c *Context) Parallel(spec BatchSpec) (*BatchOutcome, error) {
	inv := c.inv
	inv.stopped()
	if err := inv.ctx.Err(); err != nil {
		inv.fail(fmt.Errorf("engine: parallel: worker stopped: %w", err)) // runs again elsewhere
	}
	if err := c.Err(); err != nil {
		// The execution was cancelled (or this branch abandoned): no batch is opened, and the
		// caller learns why (API.md: the error return covers the execution being cancelled).
		return nil, fmt.Errorf("jetflow: parallel %q not started: %w", spec.Name, err)
	}
	op := c.nextOp()
	r, err := inv.visit(c, op, messages.OpParallel, spec.Name)
	if err != nil {
		return nil, err
	}
	inv.checkSize(r, op, spec.Config.N)
	targeted := c.depth < len(inv.path)
	if r != nil && r.cp.Status.Terminal() {
		if targeted {
			inv.end(Abandoned) // the batch this branch belongs to is over
		}
		return &BatchOutcome{Summary: r.cp.Summary, inv: inv, op: op, record: r.cp}, nil
	}
	// An inline batch has no record until it completes or suspends; one opened on the fleet has
	// one (or the request that creates it is on its way). Either stays where it started.
	inline := r == nil && inv.runsInline(spec) || r != nil && r.cp.Batch != nil && r.cp.Batch.Inline
	cached := &CachedBatch{Branches: spec.Branches, Names: spec.Names}
	if targeted {
		target := inv.path[c.depth]
		if target.OpID != op || (r == nil && !inline) || target.Index >= len(spec.Branches) {
			inv.diverged(&NonDeterminismError{ExecutionID: inv.execID, OpID: op,
				Want: fmt.Sprintf("batch %s with branch %d", target.OpID, target.Index), Got: fmt.Sprintf("batch %s of %d branches", op, len(spec.Branches))})
		}
		inv.cache.Put(BatchKey(inv.execID, op), cached)
		inv.runBranch(c, op, target.Index, cached, inline)
	}
	if inline {
		return c.runInline(op, spec, r), nil
	}
	if r == nil {
		// The batch's record is not written here: the request carries it, and the coordinator
		// creates it together with the batch's state, before any branch runs (one round trip
		// where there were two in a row). Revision 0 says it is not stored yet.
		cfg := spec.Config
		r = inv.remember(&record{cp: &messages.Checkpoint{OpID: op, OpKind: messages.OpParallel, Name: spec.Name,
			Status: messages.OpStarted, Batch: &cfg, IsMap: spec.IsMap, Flat: spec.Flat, StartedAt: inv.now().UnixNano()}})
	}
	inv.cache.Put(BatchKey(inv.execID, op), cached)
	// The request carries the batch's record (and its revision once stored), so that the
	// coordinator completes it with one compare-and-set and no read.
	c.await(messages.ParallelRequest{OpID: op, Config: spec.Config, Name: spec.Name, Checkpoint: r.cp, Revision: r.rev,
		Prior: inv.prior(r, spec.Config.N)})
	return nil, nil // not reached
}

// Limits of the records a small batch's branch tasks carry (ParallelRequest.Prior).
const (
	maxPriorBranches = 64
	maxPriorBytes    = 8 << 10
)

// prior returns what a replay of the handler to batch p meets — every final record this
// invocation knows, and p's own — when the batch is small, opened by the handler itself (a branch
// invocation may not know the records before its own batch), and the records are small. Else nil.
func (inv *Invocation) prior(p *record, n int) []messages.Prior {
	if len(inv.path) > 0 || n > maxPriorBranches {
		return nil
	}
	inv.mu.Lock()
	defer inv.mu.Unlock()
	out := []messages.Prior{{Checkpoint: p.cp, Revision: p.rev}}
	size := 0
	for _, r := range inv.records {
		if r == p {
			continue
		}
		if !r.cp.Status.Terminal() || r.rev == 0 {
			return nil // not a final stored record: a replay must read what is there
		}
		size += 64 + len(r.cp.Result) + len(r.cp.Name)
		if r.cp.Error != nil {
			size += len(r.cp.Error.Message) + len(r.cp.Error.Data)
		}
		if size > maxPriorBytes {
			return nil
		}
		out = append(out, messages.Prior{Checkpoint: r.cp, Revision: r.rev})
	}
	return out
}

// checkSize fails the invocation if the batch recorded at op has another branch count than n and
// is not complete (SEMANTICS.md rule 20).
func (inv *Invocation) checkSize(r *record, op string, n int) {
	if r != nil && r.cp.Batch != nil && r.cp.Batch.N != n && !r.cp.Status.Terminal() {
		inv.diverged(&NonDeterminismError{ExecutionID: inv.execID, OpID: op,
			Want: fmt.Sprintf("a batch of %d branches", r.cp.Batch.N), Got: fmt.Sprintf("%d branches", n)})
	}
}

// runBranch runs branch idx of batch op (inline: a batch run inline, which a task reaches on its
// way to a batch opened inside it) in a context under parent, records its outcome, and ends the
// invocation.
func (inv *Invocation) runBranch(parent *Context, op string, idx int, b *CachedBatch, inline bool) {
	id := branchRecordID(inv.execID, op, idx, inline)
	if inv.lookup(id) != nil || (inv.listed && inv.reload(id) != nil) {
		inv.end(BranchDone) // finished already (its outcome holds the checkpoints of its first tries)
	}
	// The branch ends the invocation when it returns, and its context ends with the invocation's.
	bc := sharedContext(parent.Context, inv, op+"-"+strconv.Itoa(idx+1)+"-")
	bc.depth = parent.depth + 1
	bc.parent, bc.branch = parent, &messages.BranchRef{OpID: op, Index: idx}
	bc.scope = &scope{parent: parent.scope}
	out, err := callBranch(b.Branches[idx], bc)
	bc.cancel()
	inv.stopped() // a suspension, non-determinism or stop inside is not the branch's outcome
	inv.interrupted(parent, op)
	cp := &messages.Checkpoint{OpID: id, OpKind: messages.OpBranch, Name: nameAt(b.Names, idx),
		EndedAt: inv.now().UnixNano()}
	if err != nil {
		cp.Status, cp.Error = messages.OpFailed, Info(err)
	} else {
		cp.Status, cp.Result = messages.OpSucceeded, out
	}
	if prev := inv.lookup(cp.OpID); prev == nil {
		parent.flush()
		cp.Inner = bc.scope.take()
		if inv.deferOutcome {
			inv.mu.Lock()
			inv.outcome = cp
			inv.mu.Unlock()
		} else {
			inv.write(cp, nil) // on a conflict the first writer's outcome stands
		}
	}
	inv.end(BranchDone)
}

// callBranch runs a branch function, turning a panic into the branch's error.
func callBranch(fn BranchFunc, bc *Context) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			bc.inv.logger.Error("branch panicked", "execution", bc.inv.execID, "panic", r, "stack", string(debug.Stack()))
			out, err = nil, &panicError{msg: fmt.Sprint(r), what: "branch"}
		}
	}()
	return fn(bc)
}
