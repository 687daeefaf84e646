package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"runtime/debug"
	"sync"
	"time"

	"github.com/jetflow/jetflow/internal/telemetry"
	"github.com/jetflow/jetflow/kvstore"
	"github.com/jetflow/jetflow/messages"
)

// Store is where an invocation writes checkpoints. *kvstore.Store implements it; conflicts are
// reported as kvstore.ErrConflict.
type Store interface {
	Get(ctx context.Context, key string) (kvstore.Entry, error)
	Create(ctx context.Context, key string, value []byte) (uint64, error)
	Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error)
}

// Handler is a registered handler with its input and output in msgpack.
type Handler func(ctx *Context, input []byte) ([]byte, error)

// Outcome is how an invocation ended.
type Outcome struct {
	Kind      OutcomeKind
	Result    []byte
	Error     *messages.ErrorInfo
	Timers    []messages.TimerRequest
	Parallels []messages.ParallelRequest
	Cause     error // why it was aborted
	// Record, with BranchDone and Config.DeferOutcome: the branch's outcome record, for the
	// caller to write (create-if-absent; on a conflict the first writer's outcome stands).
	Record *messages.Checkpoint
}

// OutcomeKind classifies an Outcome.
type OutcomeKind int

const (
	// Completed: the handler returned a result.
	Completed OutcomeKind = iota + 1
	// Failed: the handler returned an error or panicked, or replay diverged (in a branch too).
	Failed
	// Suspended: the invocation waits for timers or batches, listed in the Outcome.
	Suspended
	// Aborted: the invocation could not finish for reasons outside the handler (the store
	// unreachable, the worker stopping); nothing is reported and the task runs again.
	Aborted
	// BranchDone: the target branch finished and its outcome is recorded.
	BranchDone
	// Abandoned: the target branch belongs to a batch that already completed; nothing is recorded.
	Abandoned
)

func (k OutcomeKind) String() string {
	switch k {
	case Completed:
		return "completed"
	case Failed:
		return "failed"
	case Suspended:
		return "suspended"
	case Aborted:
		return "aborted"
	case BranchDone:
		return "branch_done"
	case Abandoned:
		return "abandoned"
	}
	return fmt.Sprintf("OutcomeKind(%d)", int(k))
}

type record struct {
	cp  *messages.Checkpoint
	rev uint64
}

// Invocation is one run of a handler — or of one branch, when Path is set — over an execution's
// checkpoints. Its methods are safe for concurrent use by the goroutines of one handler.
type Invocation struct {
	tel            *telemetry.Telemetry
	execID         string
	store          Store
	ctx            context.Context // for store calls: ends when the worker stops
	logger         *slog.Logger
	now            func() time.Time
	path           []messages.BranchRef
	cache          BranchCache
	listed         bool
	outcomes       func(context.Context, *messages.Checkpoint) ([]Loaded, error)
	firstRun       bool
	deferOutcome   bool
	inlineBranches int

	mu        sync.Mutex
	records   map[string]*record
	fetched   map[string]chan struct{} // batches whose outcomes Config.Outcomes reads: closed once read
	replaying bool
	ended     OutcomeKind          // BranchDone or Abandoned, once set
	outcome   *messages.Checkpoint // a branch's outcome left to the caller
	timers    []messages.TimerRequest
	parallels []messages.ParallelRequest
	fatal     error // non-determinism: the execution fails whatever the handler does
	abort     error // infrastructure failure: the invocation ends unreported
}

// Config holds what an Invocation needs besides its checkpoints.
type Config struct {
	ExecutionID string
	Store       Store
	Logger      *slog.Logger     // nil: slog.Default()
	Now         func() time.Time // nil: time.Now
	// Path is the branch to run (empty: the handler itself).
	Path []messages.BranchRef
	// Cache keeps the branch lists that replays build, so later branches of the same batch run
	// without replaying the handler. Nil: no cache.
	Cache BranchCache
	// Listed says this run may meet operations that already have records it was not given: the
	// checkpoints were listed (a listing can miss a record rewritten while it ran), or not read
	// at all for a branch run again. Before an operation with no record runs for real, such an
	// invocation reads that one record from the store.
	Listed bool
	// FirstRun says this is an execution's first invocation (its start task, delivered once). A
	// batch it opens has no record unless a duplicate start opened it first, and the coordinator
	// adopts that one: it reads none before asking for the batch.
	FirstRun bool
	// DeferOutcome leaves a finished branch's outcome record to the caller (Outcome.Record), who
	// can write it without waiting, instead of writing it before the invocation ends.
	DeferOutcome bool
	// InlineBranches is the largest batch run inline, on this worker inside the invocation that
	// opens it, unless its BatchSpec places it otherwise (PlaceAuto). 0: none.
	InlineBranches int
	// Telemetry traces step bodies as they run (never a replayed step) and counts retries. Nil:
	// none.
	Telemetry *telemetry.Telemetry
	// Outcomes, when set, says that the checkpoints given leave out the batches' branch outcome
	// records: the invocation calls it, once per batch, for the outcomes of a batch whose result
	// it rebuilds or whose inline branches it runs again, and keeps what it returns. Given the
	// batch's record; it may return fewer records than there are (the missing ones are read one
	// at a time).
	Outcomes func(ctx context.Context, batch *messages.Checkpoint) ([]Loaded, error)
}

// Loaded is a checkpoint as read from the store.
type Loaded struct {
	Checkpoint *messages.Checkpoint
	Revision   uint64
}

// NewInvocation prepares a run over the given checkpoints.
func NewInvocation(ctx context.Context, cfg Config, checkpoints []Loaded) *Invocation {
	inv := &Invocation{
		execID:         cfg.ExecutionID,
		store:          cfg.Store,
		ctx:            ctx,
		logger:         cfg.Logger,
		now:            cfg.Now,
		path:           cfg.Path,
		cache:          cfg.Cache,
		listed:         cfg.Listed,
		outcomes:       cfg.Outcomes,
		firstRun:       cfg.FirstRun,
		deferOutcome:   cfg.DeferOutcome,
		inlineBranches: cfg.InlineBranches,
		tel:            cfg.Telemetry,
		records:        make(map[string]*record, len(checkpoints)),
	}
	if inv.logger == nil {
		inv.logger = slog.Default()
	}
	if inv.now == nil {
		inv.now = time.Now
	}
	if inv.cache == nil {
		inv.cache = noCache{}
	}
	for _, l := range checkpoints {
		inv.records[l.Checkpoint.OpID] = &record{cp: l.Checkpoint, rev: l.Revision}
	}
	inv.replaying = len(checkpoints) > 0
	return inv
}

// Run calls h with input — replaying to the target branch when the invocation has a path — and
// waits until it returns, the branch finishes, or the invocation suspends.
func (inv *Invocation) Run(ctx context.Context, h Handler, input []byte) Outcome {
	return inv.run(ctx, func(root *Context) ([]byte, error) { return h(root, input) })
}

// RunCached runs the target branch straight from a branch list cached by an earlier replay,
// without replaying the handler. The cached batch must be the one the path's last element names.
func (inv *Invocation) RunCached(ctx context.Context, b *CachedBatch) Outcome {
	return inv.run(ctx, func(root *Context) ([]byte, error) {
		last := inv.path[len(inv.path)-1]
		parent := root
		parent.depth = len(inv.path) - 1
		inv.setReplaying(false)
		// Branch tasks aim at batches on the fleet. Not returned from: runBranch ends the goroutine.
		inv.runBranch(parent, last.OpID, last.Index, b, false)
		return nil, nil
	})
}

func (inv *Invocation) run(ctx context.Context, body func(*Context) ([]byte, error)) Outcome {
	root := newContext(ctx, inv, "")
	// What the handler's goroutine leaves: one allocation for all of it.
	r := &struct {
		out      []byte
		err      error
		returned bool
		panicMsg string
		done     chan struct{}
	}{done: make(chan struct{})}
	go func() {
		defer close(r.done)
		defer func() {
			if p := recover(); p != nil {
				r.panicMsg = fmt.Sprint(p)
				inv.logger.Error("handler panicked", "execution", inv.execID, "panic", r.panicMsg, "stack", string(debug.Stack()))
			}
		}()
		r.out, r.err = body(root)
		r.returned = true
	}()
	<-r.done
	root.cancel()
	out, err, returned, panicMsg := r.out, r.err, r.returned, r.panicMsg

	inv.mu.Lock()
	defer inv.mu.Unlock()
	switch {
	case inv.abort != nil:
		return Outcome{Kind: Aborted, Cause: inv.abort}
	case inv.fatal != nil:
		return Outcome{Kind: Failed, Error: Info(inv.fatal)}
	case inv.ended != 0:
		return Outcome{Kind: inv.ended, Record: inv.outcome}
	case len(inv.timers) > 0 || len(inv.parallels) > 0:
		return Outcome{Kind: Suspended, Timers: inv.timers, Parallels: inv.parallels}
	case len(inv.path) > 0:
		// The target branch was never reached, yet the handler ended: its code diverged.
		return Outcome{Kind: Failed, Error: Info(&NonDeterminismError{ExecutionID: inv.execID, OpID: inv.path[0].OpID,
			Want: "a batch with branch " + fmt.Sprint(inv.path[0].Index), Got: "no such operation"})}
	case panicMsg != "":
		return Outcome{Kind: Failed, Error: &messages.ErrorInfo{Type: "Panic", Message: "handler panicked: " + panicMsg}}
	case !returned:
		return Outcome{Kind: Failed, Error: &messages.ErrorInfo{Type: "Goexit", Message: "handler exited its goroutine without returning"}}
	case err != nil:
		return Outcome{Kind: Failed, Error: Info(err)}
	}
	return Outcome{Kind: Completed, Result: out}
}

// suspend records that the code of c waits for t and ends the calling goroutine.
func (c *Context) suspend(t messages.TimerRequest) {
	c.flush()
	t.Path = c.inv.path
	c.wait([]messages.TimerRequest{t}, nil)
}

// await records that the code of c waits for the batch p and ends the calling goroutine.
func (c *Context) await(p messages.ParallelRequest) {
	c.flush()
	p.Path, p.Via = c.inv.path, c.via
	c.wait(nil, []messages.ParallelRequest{p})
}

// wait records timers and batches the code of c waits for, and ends the calling goroutine. In a
// branch of an inline batch they are the branch's: the batch suspends the invocation with them
// only once none of its branches can go on. Elsewhere they suspend the invocation.
func (c *Context) wait(ts []messages.TimerRequest, ps []messages.ParallelRequest) {
	if s := c.scope; s != nil && s.inline != nil {
		s.mu.Lock()
		s.timers, s.parallels = append(s.timers, ts...), append(s.parallels, ps...)
		s.mu.Unlock()
		runtime.Goexit()
	}
	inv := c.inv
	inv.mu.Lock()
	inv.timers, inv.parallels = append(inv.timers, ts...), append(inv.parallels, ps...)
	inv.mu.Unlock()
	runtime.Goexit()
}

// end finishes a branch invocation (BranchDone or Abandoned) and ends the calling goroutine.
func (inv *Invocation) end(kind OutcomeKind) {
	inv.mu.Lock()
	inv.ended = kind
	inv.mu.Unlock()
	runtime.Goexit()
}

// stopped ends the calling goroutine if the invocation has already suspended, finished, failed or
// aborted: a handler that swallowed the end (a goroutine of its own, say) can do nothing more.
func (inv *Invocation) stopped() {
	inv.mu.Lock()
	over := inv.abort != nil || inv.fatal != nil || inv.ended != 0 || len(inv.timers) > 0 || len(inv.parallels) > 0
	inv.mu.Unlock()
	if over {
		runtime.Goexit()
	}
}

// fail records a store failure and ends the calling goroutine; the task runs again later.
func (inv *Invocation) fail(err error) {
	inv.mu.Lock()
	if inv.abort == nil {
		inv.abort = err
	}
	inv.mu.Unlock()
	runtime.Goexit()
}

// interrupted ends the calling goroutine if the code at op was cancelled from outside: the
// worker stopping (the invocation aborts, to run again elsewhere) or, in a branch invocation, the
// batch completing without this branch (it is abandoned, and records nothing).
func (inv *Invocation) interrupted(c *Context, op string) {
	if err := inv.ctx.Err(); err != nil {
		inv.fail(fmt.Errorf("engine: %s: worker stopped: %w", op, err))
	}
	if err := c.Err(); err != nil {
		if c.scope.abandoned() {
			runtime.Goexit() // a branch of an inline batch that completed without it: it records nothing
		}
		if len(inv.path) > 0 {
			inv.end(Abandoned)
		}
		inv.fail(fmt.Errorf("engine: %s: cancelled: %w", op, err))
	}
}

// diverged records a non-determinism and ends the calling goroutine.
func (inv *Invocation) diverged(err *NonDeterminismError) {
	inv.mu.Lock()
	if inv.fatal == nil {
		inv.fatal = err
	}
	inv.mu.Unlock()
	runtime.Goexit()
}

// visit returns the checkpoint at op, after checking that it is of the kind and name the handler
// now asks for. A mismatch poisons the invocation and returns the error.
func (inv *Invocation) visit(c *Context, op string, kind messages.OpKind, name string) (*record, error) {
	inv.mu.Lock()
	r := inv.records[op]
	if r == nil || !r.cp.Status.Terminal() {
		inv.replaying = false
	}
	var err *NonDeterminismError
	if r != nil && (r.cp.OpKind != kind || r.cp.Name != name) {
		err = &NonDeterminismError{
			ExecutionID: inv.execID, OpID: op,
			Want: fmt.Sprintf("%s %q", r.cp.OpKind, r.cp.Name),
			Got:  fmt.Sprintf("%s %q", kind, name),
		}
		if inv.fatal == nil {
			inv.fatal = err
		}
	}
	inv.mu.Unlock()
	if err != nil {
		return nil, err
	}
	// A batch an execution's first invocation opens has no record unless a duplicate start
	// opened it, and the coordinator adopts that record: it need not be read first. Nor need the
	// operations of the branches of an inline batch it runs: their records exist only if a
	// duplicate start ran them, and then their writes conflict and adopt what is stored (their
	// bodies may run twice: at-least-once). Any other invocation may be replaying past a batch
	// that exists (a branch resumed after the batch it opened): it reads the record.
	mayExist := !inv.firstRun || c.depth < len(inv.path) || kind != messages.OpParallel && !c.scope.inInline()
	if r == nil && inv.listed && mayExist {
		if r = inv.reload(op); r != nil {
			return inv.visit(c, op, kind, name)
		}
	}
	if r == nil && c.depth < len(inv.path) && kind != messages.OpParallel {
		// Replaying towards a branch, every operation before the batch has a checkpoint.
		inv.diverged(&NonDeterminismError{ExecutionID: inv.execID, OpID: op,
			Want: "the checkpointed path to batch " + inv.path[c.depth].OpID, Got: fmt.Sprintf("a new %s %q", kind, name)})
	}
	return r, nil
}

func (inv *Invocation) isReplaying() bool {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	return inv.replaying
}

func (inv *Invocation) setReplaying(v bool) {
	inv.mu.Lock()
	inv.replaying = v
	inv.mu.Unlock()
}

func (inv *Invocation) lookup(op string) *record {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	return inv.records[op]
}

// commit writes cp over prev (nil: the first write), after the deferred records of c's branch and
// of the branches around it. It returns what is stored afterwards: cp, or the record another
// writer stored first, which the caller then adopts.
func (c *Context) commit(cp *messages.Checkpoint, prev *record) *record {
	c.flush()
	return c.inv.write(cp, prev)
}

// deferWrite keeps cp, the first record of its operation, to be written later: with the outcome
// of c's branch, or before any other write in it or a suspension. A crash before the write runs
// the operation again, as a crash before any checkpoint does.
func (c *Context) deferWrite(cp *messages.Checkpoint) *record {
	c.scope.mu.Lock()
	c.scope.deferred = append(c.scope.deferred, cp)
	c.scope.mu.Unlock()
	return c.inv.remember(&record{cp: cp})
}

// flush writes the deferred records of c's branch and the branches around it, outermost first:
// a record is never stored before the operations that came before it.
func (c *Context) flush() { c.scope.flushAll(c.inv) }

func (inv *Invocation) write(cp *messages.Checkpoint, prev *record) *record {
	data := messages.MustEncode(cp)
	key := messages.CheckpointKey(inv.execID, cp.OpID)
	var (
		rev uint64
		err error
	)
	if prev == nil {
		rev, err = inv.store.Create(inv.ctx, key, data)
	} else {
		rev, err = inv.store.Update(inv.ctx, key, data, prev.rev)
	}
	if err == nil {
		return inv.remember(&record{cp: cp, rev: rev})
	}
	if !errors.Is(err, kvstore.ErrConflict) {
		inv.fail(fmt.Errorf("engine: write checkpoint %s: %w", key, err))
	}
	stored := inv.reload(cp.OpID) // another writer was first: adopt its record
	if stored == nil {
		inv.fail(fmt.Errorf("engine: checkpoint %s conflicted, then vanished", key))
	}
	return stored
}

// reload reads the record of op from the store: nil if it has none.
func (inv *Invocation) reload(op string) *record {
	key := messages.CheckpointKey(inv.execID, op)
	e, err := inv.store.Get(inv.ctx, key)
	if errors.Is(err, kvstore.ErrNotFound) {
		return nil
	}
	if err != nil {
		inv.fail(fmt.Errorf("engine: read checkpoint %s: %w", key, err))
	}
	cp, err := messages.DecodeAs[*messages.Checkpoint](e.Value)
	if err != nil {
		inv.fail(fmt.Errorf("engine: checkpoint %s: %w", key, err))
	}
	return inv.remember(&record{cp: cp, rev: e.Revision})
}

// fetchOutcomes reads the branch outcome records of the batch whose record is cp, once per
// invocation, when the checkpoints it was given leave them out (Config.Outcomes). Records it
// already has stand.
func (inv *Invocation) fetchOutcomes(cp *messages.Checkpoint) {
	if inv.outcomes == nil {
		return
	}
	inv.mu.Lock()
	ready, started := inv.fetched[cp.OpID]
	if !started {
		if inv.fetched == nil {
			inv.fetched = map[string]chan struct{}{}
		}
		ready = make(chan struct{})
		inv.fetched[cp.OpID] = ready
	}
	inv.mu.Unlock()
	if started {
		<-ready // another goroutine of this invocation reads them
		return
	}
	defer close(ready) // also when fail ends the goroutine
	loaded, err := inv.outcomes(inv.ctx, cp)
	if err != nil {
		inv.fail(fmt.Errorf("engine: read the outcomes of batch %s: %w", cp.OpID, err))
	}
	inv.mu.Lock()
	defer inv.mu.Unlock()
	for _, l := range loaded {
		if inv.records[l.Checkpoint.OpID] == nil {
			inv.records[l.Checkpoint.OpID] = &record{cp: l.Checkpoint, rev: l.Revision}
		}
	}
}

func (inv *Invocation) remember(r *record) *record {
	inv.mu.Lock()
	inv.records[r.cp.OpID] = r
	inv.mu.Unlock()
	return r
}
