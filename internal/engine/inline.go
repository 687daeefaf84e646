package engine

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetflow/jetflow/coordinator/batch"
	"github.com/jetflow/jetflow/internal/telemetry"
	"github.com/jetflow/jetflow/messages"
)

// Placement says where a batch's branches run.
type Placement int

const (
	// PlaceAuto runs a batch inline when it has at most Config.InlineBranches branches, and on
	// the fleet otherwise.
	PlaceAuto Placement = iota
	// PlaceInline runs every branch on the worker that opens the batch, inside its invocation.
	PlaceInline
	// PlaceFleet dispatches every branch as a task of its own, through the coordinator.
	PlaceFleet
)

// DefaultInlineBranches is the largest batch a worker runs inline by default.
const DefaultInlineBranches = 16

// scope is a branch that this invocation runs itself: the target branch of a branch task, or a
// branch of a batch run inline. It keeps the branch's first-try step records until its outcome
// is written, and, for an inline branch, what the branch waits for once it suspends.
type scope struct {
	parent *scope
	inline *inlineBatch // nil for the target branch

	mu        sync.Mutex
	deferred  []*messages.Checkpoint
	timers    []messages.TimerRequest
	parallels []messages.ParallelRequest
}

// inlineBatch is the shared state of the branches of one batch run inline.
type inlineBatch struct {
	ctx       context.Context // the batch's: traced under its span
	abandoned atomic.Bool     // the batch completed: its running branches record nothing more
}

// branchContext returns the context of branch i, under c, traced in a span of its own when the
// batch is traced.
func (ib *inlineBatch) branchContext(c *Context, op string, i int) *Context {
	ctx := ib.ctx
	var span trace.Span
	if c.inv.traced(ctx) {
		ctx, span = c.inv.tel.Tracer.Start(ctx, "jetflow.branch "+op+"["+strconv.Itoa(i)+"]")
		if span.IsRecording() {
			span.SetAttributes(telemetry.KeyExecution.String(c.inv.execID), telemetry.KeyOp.String(op), telemetry.KeyIndex.Int(i))
		}
	}
	bc := newContext(ctx, c.inv, op+"-"+strconv.Itoa(i+1)+"-")
	bc.parent, bc.depth, bc.scope, bc.via, bc.span = c, c.depth, c.scope, c.via, span
	return bc
}

// abandoned reports whether the branch, or one around it, belongs to an inline batch that
// completed without it.
func (s *scope) abandoned() bool {
	for ; s != nil; s = s.parent {
		if s.inline != nil && s.inline.abandoned.Load() {
			return true
		}
	}
	return false
}

// flush writes the deferred records one by one. The lock is held while they are written, so
// that a sibling branch flushing too goes on only once they are stored.
func (s *scope) flush(inv *Invocation) {
	s.mu.Lock()
	defer s.mu.Unlock()
	pending := s.deferred
	s.deferred = nil
	for _, cp := range pending {
		inv.write(cp, nil)
	}
}

// flushAll flushes the branches around s, outermost first, then s.
func (s *scope) flushAll(inv *Invocation) {
	if s != nil {
		s.parent.flushAll(inv)
		s.flush(inv)
	}
}

// take returns the deferred records and forgets them: they ride on the branch's outcome.
func (s *scope) take() []*messages.Checkpoint {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.deferred
	s.deferred = nil
	return d
}

// inInline reports whether the branch is, or is inside, a branch of an inline batch.
func (s *scope) inInline() bool {
	for ; s != nil; s = s.parent {
		if s.inline != nil {
			return true
		}
	}
	return false
}

func (s *scope) waits() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.timers) > 0 || len(s.parallels) > 0
}

// runsInline says whether the batch spec, opened with no record, runs inline.
func (inv *Invocation) runsInline(spec BatchSpec) bool {
	switch spec.Placement {
	case PlaceInline:
		return true
	case PlaceFleet:
		return false
	}
	return inv.inlineBranches > 0 && spec.Config.N <= inv.inlineBranches
}

// inlineReport is a message from a branch of an inline batch: how it ended — with its outcome
// (found stored by an earlier run, or new, with a verdict channel for the runner's answer), or
// without one (it suspended, the invocation ended, or it left its goroutine) — or, after it was
// told to write its new outcome, that the outcome is stored (written).
type inlineReport struct {
	index   int
	cp      *messages.Checkpoint
	s       *scope
	stored  bool
	written bool
	verdict chan bool // true: write it; false: it rides on the batch's record
}

// maxRidingBytes bounds the outcomes that ride on an inline batch's completed record.
const maxRidingBytes = 64 << 10

// runInline runs the batch at op on this worker, inside the invocation: the same decisions as
// the coordinator's (batch.Apply) say which branches run and when the batch is complete, and the
// batch's record is written once, complete, with its summary. A branch's outcome is stored as
// it finishes (InlineRecordID), unless it completes the batch — it and any other that finished
// at the same moment then ride on the batch's record, so that a batch whose branches end
// together costs one write. A branch that waits (a Wait, a retry, a batch on the fleet) keeps
// its slot; once no branch can go on and the batch is not complete, the invocation suspends with
// everything they wait for, and its next run resumes them from their records.
func (c *Context) runInline(op string, spec BatchSpec, r *record) *BatchOutcome {
	inv := c.inv
	cfg := spec.Config
	cfg.Inline = true
	started := inv.now().UnixNano()
	if r != nil {
		started = r.cp.StartedAt
		inv.fetchOutcomes(r.cp) // run before: its finished branches' outcomes
	}
	state, d := batch.Open(inv.execID, "", messages.ParallelRequest{OpID: op, Config: cfg})
	ib := &inlineBatch{ctx: c.Context}
	if inv.traced(c.Context) {
		var span trace.Span
		ib.ctx, span = inv.tel.Tracer.Start(c.Context, "jetflow.parallel "+spec.Name)
		if span.IsRecording() {
			span.SetAttributes(telemetry.KeyExecution.String(inv.execID), telemetry.KeyOp.String(op),
				telemetry.KeyName.String(spec.Name), attribute.Bool("jetflow.batch.inline", true), attribute.Int("jetflow.batch.size", cfg.N))
		}
		defer span.End() // also when the invocation suspends here (runtime.Goexit runs it)
	}
	reports := make(chan inlineReport, 2*cfg.N) // a branch reports at most twice: sends never block
	running := make(map[int]*Context)           // dispatched, outcome not reported
	writing := make(map[int]*Context)           // told to write its outcome, not stored yet
	var waiting []*scope
	var riding []*messages.Checkpoint
	dispatch := func(d batch.Decision) {
		for i := d.DispatchFrom; i < d.DispatchTo; i++ {
			bc := ib.branchContext(c, op, i)
			bc.scope = &scope{parent: c.scope, inline: ib}
			bc.via = append(append(make([]messages.BranchRef, 0, len(c.via)+1), c.via...), messages.BranchRef{OpID: op, Index: i})
			bc.branch = &messages.BranchRef{OpID: op, Index: i}
			running[i] = bc
			go inv.runInlineBranch(bc, c, op, i, spec, reports)
		}
	}
	// stored checks an outcome as stored against the one folded: another run's outcome may have
	// been stored first; if it differs, this run's decisions are void and it runs again.
	stored := func(rep inlineReport) {
		if _, ok := writing[rep.index]; !ok {
			return // a branch that gave up after its outcome rode on the record, or was abandoned
		}
		if rep.cp == nil {
			// The write failed (the invocation aborts), or the branch gave up before it was told
			// to write: the worker is stopping or the execution was cancelled.
			inv.stopped()
			inv.interrupted(c, op)
			inv.fail(fmt.Errorf("engine: batch %s: branch %d's outcome was not stored", op, rep.index))
		}
		writing[rep.index].cancel()
		delete(writing, rep.index)
		if batch.Bit(state.FailedBits, rep.index) != (rep.cp.Status == messages.OpFailed) {
			inv.fail(fmt.Errorf("engine: batch %s: another run stored a different outcome of branch %d", op, rep.index))
		}
	}
	dispatch(d)
	for !state.Completed && len(running)+len(writing) > 0 {
		got := []inlineReport{<-reports}
		if len(running) > 1 {
			runtime.Gosched() // let the branches about to finish report too: they may ride together
		}
	drain:
		for {
			select {
			case rep := <-reports:
				got = append(got, rep)
			default:
				break drain
			}
		}
		var fresh []inlineReport
		for _, rep := range got {
			inv.stopped() // the invocation ended inside a branch: nothing more runs here
			if c.Err() != nil {
				// The code that awaits the batch was cancelled (its own branch abandoned, the
				// execution cancelled, the worker stopping): the batch records nothing more.
				inv.interrupted(c, op)
			}
			if rep.written {
				stored(rep)
				continue
			}
			bc := running[rep.index]
			delete(running, rep.index)
			if state.Completed {
				bc.cancel() // finished after an outcome before it completed the batch: abandoned
				continue
			}
			switch {
			case rep.cp == nil && rep.s.waits():
				bc.cancel()
				waiting = append(waiting, rep.s) // keeps its slot until it runs again
				continue
			case rep.cp == nil:
				// The branch function left its goroutine (runtime.Goexit) without returning.
				bc.cancel()
				rep.cp = c.commit(&messages.Checkpoint{OpID: messages.InlineRecordID(op, rep.index), OpKind: messages.OpBranch,
					Name: nameAt(spec.Names, rep.index), Status: messages.OpFailed, EndedAt: inv.now().UnixNano(),
					Error: &messages.ErrorInfo{Type: "Goexit", Message: "branch exited its goroutine without returning"}}, nil).cp
			case rep.stored:
				bc.cancel()
			default:
				writing[rep.index] = bc
				fresh = append(fresh, rep)
			}
			dispatch(batch.Apply(state, rep.index, rep.cp.Status == messages.OpFailed))
		}
		ride := state.Completed && ridingSize(fresh) <= maxRidingBytes
		for _, rep := range fresh {
			rep.verdict <- !ride
			if ride {
				writing[rep.index].cancel()
				delete(writing, rep.index)
				riding = append(riding, rep.cp)
			}
		}
	}
	if !state.Completed {
		// No branch can go on: the invocation waits for what the waiting branches wait for. The
		// batch is recorded as started, so that its next run is inline too and a handler that
		// changed its name or branch count meanwhile is found out.
		if r == nil {
			c.commit(&messages.Checkpoint{OpID: op, OpKind: messages.OpParallel, Name: spec.Name, Status: messages.OpStarted,
				Batch: &cfg, IsMap: spec.IsMap, Flat: spec.Flat, StartedAt: started}, nil)
		}
		var ts []messages.TimerRequest
		var ps []messages.ParallelRequest
		for _, s := range waiting {
			s.mu.Lock()
			ts, ps = append(ts, s.timers...), append(ps, s.parallels...)
			s.mu.Unlock()
		}
		c.wait(ts, ps)
	}
	ib.abandoned.Store(true)
	for _, bc := range running {
		bc.cancel() // real cancellation: their steps see it, and they record nothing
	}
	for len(writing) > 0 { // the outcomes told to write are stored before the batch's record
		rep := <-reports
		inv.stopped()
		if rep.written {
			stored(rep)
		}
	}
	if c.Err() != nil {
		inv.interrupted(c, op) // as above: the batch's record is not written either
	}
	cp := &messages.Checkpoint{OpID: op, OpKind: messages.OpParallel, Name: spec.Name, Status: messages.OpSucceeded,
		Batch: &cfg, Summary: batch.Summary(state), IsMap: spec.IsMap, Flat: spec.Flat, StartedAt: started, EndedAt: inv.now().UnixNano(),
		Inner: riding}
	r = c.commit(cp, r)
	if !r.cp.Status.Terminal() {
		// Another run of this code opened the batch on the fleet first: this run gives way, and
		// the next one follows the record.
		inv.fail(fmt.Errorf("engine: batch %s was opened on the fleet by another run", op))
	}
	return &BatchOutcome{Summary: r.cp.Summary, inv: inv, op: op, record: r.cp}
}

func ridingSize(reps []inlineReport) int {
	n := 0
	for _, rep := range reps {
		n += 64 + len(rep.cp.Result) + len(rep.cp.Name)
		if rep.cp.Error != nil {
			n += len(rep.cp.Error.Message) + len(rep.cp.Error.Data)
		}
		for _, in := range rep.cp.Inner {
			n += 64 + len(in.Result) + len(in.Name)
		}
	}
	return n
}

// runInlineBranch runs branch i of the inline batch at op in bc, and reports how it ended.
func (inv *Invocation) runInlineBranch(bc, parent *Context, op string, i int, spec BatchSpec, reports chan<- inlineReport) {
	rep := inlineReport{index: i, s: bc.scope}
	final := true  // rep is still to be sent
	defer func() { // also when the goroutine ends by runtime.Goexit
		if bc.span != nil {
			bc.span.End() // the branch's span (branchContext)
		}
		if final {
			reports <- rep
		}
	}()
	id := messages.InlineRecordID(op, i)
	if r := inv.lookup(id); r != nil {
		rep.cp, rep.stored = r.cp, true // finished in an earlier run
		return
	}
	if inv.listed && !inv.firstRun { // see visit: a first run's inline branches have no records
		if r := inv.reload(id); r != nil {
			rep.cp, rep.stored = r.cp, true
			return
		}
	}
	out, err := callBranch(spec.Branches[i], bc)
	inv.stopped()
	inv.interrupted(bc, op)
	cp := &messages.Checkpoint{OpID: id, OpKind: messages.OpBranch, Name: nameAt(spec.Names, i), EndedAt: inv.now().UnixNano()}
	if err != nil {
		cp.Status, cp.Error = messages.OpFailed, Info(err)
	} else {
		cp.Status, cp.Result = messages.OpSucceeded, out
	}
	cp.Inner = bc.scope.take()
	verdict := make(chan bool, 1)
	final = false
	reports <- inlineReport{index: i, s: bc.scope, cp: cp, verdict: verdict}
	if hook := testHookAwaitingVerdict.Load(); hook != nil {
		(*hook)()
	}
	var write bool
	select {
	case write = <-verdict:
	case <-bc.Done(): // abandoned, the execution cancelled or the worker stopping
		select {
		case write = <-verdict: // an answer, if any, comes first
		default:
			// Gone without an answer: the runner may still tell it to write, and then waits
			// for this report (a stored outcome, or none) before it goes on.
			final, rep.written = true, true
			return
		}
	}
	if write {
		// Should the write fail, the invocation aborts and the report goes without an outcome.
		final, rep.written = true, true
		rep.cp = parent.commit(cp, nil).cp // on a conflict the first writer's outcome stands
	}
}

// testHookAwaitingVerdict runs when a branch has reported its outcome and waits for the
// runner's answer (tests stop the worker there).
var testHookAwaitingVerdict atomic.Pointer[func()]

func nameAt(names []string, i int) string {
	if i < len(names) {
		return names[i]
	}
	return ""
}
