package coordinator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow/jetflow/coordinator/batch"
	"github.com/jetflow/jetflow/coordinator/lifecycle"
	"github.com/jetflow/jetflow/internal/jsasync"
	"github.com/jetflow/jetflow/internal/recent"
	"github.com/jetflow/jetflow/kvstore"
	"github.com/jetflow/jetflow/messages"
)

// A batch's state is driven by two loops: the event loop opens it (OpenBatch, from the
// suspension of the code that called Parallel) and the branch loop folds the branch outcomes,
// which it reads straight from the checkpoint bucket's stream. Opening stores the state first and
// then dispatches (a repeated request re-dispatches what is in flight). Folding carries out effects
// before it stores state: every effect is deduplicated (task ids) or idempotent (the batch's
// checkpoint is written only over STARTED), so a crash in between redelivers the outcomes and the
// same decisions are made again from the old state.

// maxBatchInput is the largest input a batch's state keeps for its resume task (the state is
// rewritten at every fold, so the bound is lower than a task's).
const maxBatchInput = 4 << 10

// batchKey is the key of a batch's state in BatchBucket.
func batchKey(executionID, op string) string { return executionID + "." + op }

// branchTask is the first dispatch of branch i of b.
func branchTask(b *messages.Batch, i int) *messages.RunTask {
	path := make([]messages.BranchRef, 0, len(b.Path)+len(b.Via)+1)
	path = append(append(path, b.Path...), b.Via...) // through the inline branches that opened it
	path = append(path, messages.BranchRef{OpID: b.OpID, Index: i})
	// A small batch's tasks carry what a replay to it needs (Prior, and the input): a worker that
	// does not know the batch yet reads nothing.
	t := &messages.RunTask{ExecutionID: b.ExecutionID, Function: b.Function, Fresh: true, Path: path,
		TaskID: "b." + b.OpID + "." + strconv.Itoa(i), Prior: b.Prior}
	if len(b.Prior) > 0 {
		t.Input = b.Input
	}
	return t
}

// again marks a branch task that may have been published before: the worker that takes it looks
// for the branch's outcome before running it.
func again(t *messages.RunTask) *messages.RunTask {
	t.Fresh = false
	return t
}

// openBatch starts a batch's first branches, or, if it was opened before, dispatches its
// unfinished branches again (deduplicated) in case a crash lost them.
func (c *Coordinator) openBatch(ctx context.Context, cache *bounded[*cachedBatch], eff lifecycle.OpenBatch) error {
	key := batchKey(eff.ExecutionID, eff.Request.OpID)
	// Stored before the first dispatch, so that no branch outcome arrives before its batch. A
	// crash between the two is mended by reopen: a repeated request re-dispatches.
	b, d := batch.Open(eff.ExecutionID, eff.Function, eff.Request)
	b.ResumeTrace = eff.Request.ResumeTrace
	if len(eff.Input) <= maxBatchInput {
		b.Input = eff.Input
	}
	b.Prior = eff.Request.Prior
	// The batch's record: stored by the opener (it sent the revision), or left to this coordinator
	// (revision 0), which creates it while it creates the batch's state — both are stored before
	// the first dispatch, since a branch's replay meets the record.
	var record *jsasync.Future
	if cp := eff.Request.Checkpoint; cp != nil && cp.OpID == b.OpID && cp.OpKind == messages.OpParallel {
		b.Record, b.RecordRev = cp, eff.Request.Revision
		if b.RecordRev == 0 {
			f, err := c.createRecord(ctx, b)
			if err != nil {
				return err
			}
			record = f
		}
	}
	c.beginBatch(ctx, b, eff.Request)
	rev, err := c.batches.Create(ctx, key, messages.MustEncode(b))
	if record != nil {
		if rerr := c.settleRecord(ctx, b, record); rerr != nil {
			c.spans.drop(key)
			return rerr
		}
	}
	switch {
	case errors.Is(err, kvstore.ErrConflict):
		c.spans.drop(key) // opened before: its span is the first opening's
		if cb, ok := cache.get(key); ok && cb.trusted {
			// This coordinator opened it and published every task its stored state has in
			// flight: an execution's requests are handled one at a time in its lane, so the
			// opening either published them all or dropped this entry. A stale or repeated
			// request changes nothing, and dispatching again would run branches twice (their
			// first tasks have no deduplication id).
			return nil
		}
		return c.reopenBatch(ctx, key)
	case err != nil:
		c.spans.drop(key)
		return err
	}
	if !b.Completed {
		// The branch loop folds from this copy (it is never modified: folds work on copies).
		cb := &cachedBatch{state: b, rev: rev, trusted: true, rollup: newRollup(b)}
		if len(b.Prior) > 0 {
			cb.outcomes = []messages.Prior{} // a small batch: keep its outcomes for the resume task
		}
		cache.put(key, cb)
	}
	if err := c.carryOutBatch(ctx, b, d); err != nil {
		cache.drop(key) // its first tasks may be unpublished: a repeated request dispatches them
		return err
	}
	return nil
}

// createRecord starts creating b's record (b.Record, not stored yet) without waiting; nil when it
// was created synchronously (too large for one message: never for a batch's record in practice).
func (c *Coordinator) createRecord(ctx context.Context, b *messages.Batch) (*jsasync.Future, error) {
	key := messages.CheckpointKey(b.ExecutionID, b.OpID)
	data := messages.MustEncode(b.Record)
	f, ok, err := c.ckpts.CreateAsync(key, data)
	if err != nil || ok {
		return f, err
	}
	rev, err := c.ckpts.Create(ctx, key, data)
	if errors.Is(err, kvstore.ErrConflict) {
		return nil, c.adoptRecord(ctx, b)
	}
	if err == nil {
		recordStored(b, rev)
	}
	return nil, err
}

// settleRecord waits for the creation of b's record: stored, or stored before (an earlier
// opening whose batch state was lost, or is there too), whose record then stands.
func (c *Coordinator) settleRecord(ctx context.Context, b *messages.Batch, f *jsasync.Future) error {
	rev, err := awaitPubAck(ctx, f)
	switch {
	case err == nil:
		recordStored(b, rev)
		return nil
	case kvstore.IsConflict(err):
		return c.adoptRecord(ctx, b)
	}
	return fmt.Errorf("coordinator: batch %s.%s: create its record: %w", b.ExecutionID, b.OpID, err)
}

// adoptRecord takes b's record as stored.
func (c *Coordinator) adoptRecord(ctx context.Context, b *messages.Batch) error {
	e, err := c.ckpts.Get(ctx, messages.CheckpointKey(b.ExecutionID, b.OpID))
	if err != nil {
		return fmt.Errorf("coordinator: batch %s.%s: read its record: %w", b.ExecutionID, b.OpID, err)
	}
	cp, err := messages.DecodeAs[*messages.Checkpoint](e.Value)
	if err != nil {
		return fmt.Errorf("coordinator: batch %s.%s: %w", b.ExecutionID, b.OpID, err)
	}
	b.Record = cp
	recordStored(b, e.Revision)
	return nil
}

// recordStored notes the revision of b's record, where b keeps it and in the records its tasks
// carry.
func recordStored(b *messages.Batch, rev uint64) {
	b.RecordRev = rev
	b.Prior = slices.Clone(b.Prior) // the request's own stays as it came
	for i, p := range b.Prior {
		if p.Checkpoint != nil && p.Checkpoint.OpID == b.OpID {
			b.Prior[i] = messages.Prior{Checkpoint: b.Record, Revision: rev}
		}
	}
}

// reopenBatch handles a repeated request for a batch that exists: it dispatches its unfinished
// branches again (deduplicated), or completes it again if it is complete (idempotent).
func (c *Coordinator) reopenBatch(ctx context.Context, key string) error {
	e, err := c.batches.Get(ctx, key)
	if err != nil {
		return err
	}
	b, err := messages.DecodeAs[*messages.Batch](e.Value)
	if err != nil {
		return fmt.Errorf("coordinator: batch %s: %w", key, err)
	}
	if b.Completed {
		// Completed at opening (no branches, say), perhaps with a crash before the effects.
		return c.completeBatch(ctx, b, nil, 0)
	}
	var tasks []*messages.RunTask
	batch.InFlight(b, func(i int) { tasks = append(tasks, again(branchTask(b, i))) })
	return c.publishTasks(ctx, tasks, b.TraceParent, true)
}

// carryOutBatch dispatches what d says, and completes the batch if it says so.
func (c *Coordinator) carryOutBatch(ctx context.Context, b *messages.Batch, d batch.Decision) error {
	if n := d.Dispatches(); n > 0 {
		tasks := make([]*messages.RunTask, 0, n)
		for i := d.DispatchFrom; i < d.DispatchTo; i++ {
			tasks = append(tasks, branchTask(b, i))
		}
		// The batch's state was just created: none of its tasks was ever published.
		if err := c.publishTasks(ctx, tasks, b.TraceParent, false); err != nil {
			return err
		}
	}
	if d.Complete {
		return c.completeBatch(ctx, b, []messages.Prior{}, 0) // no branches: no outcomes to carry
	}
	return nil
}

// completeBatch freezes the batch in its checkpoint, tells workers to abandon its running
// branches, and resumes the code that awaits it. rolled is the number of stored rollup parts
// that hold every outcome the batch counted (0: none).
func (c *Coordinator) completeBatch(ctx context.Context, b *messages.Batch, outcomes []messages.Prior, rolled int) error {
	key := messages.CheckpointKey(b.ExecutionID, b.OpID)
	written := false
	var final messages.Prior // the batch's record as completed, for the resume task
	summary := batch.Summary(b)
	summary.Rollup = rolled
	if b.Record != nil && b.Record.Status == messages.OpStarted {
		// The record as the opener stored it: one compare-and-set, no read. A conflict means it
		// changed since (completed before a crash, say): read it as below.
		cp := *b.Record
		cp.Status, cp.Summary, cp.EndedAt = messages.OpSucceeded, summary, time.Now().UnixNano()
		rev, err := c.ckpts.Update(ctx, key, messages.MustEncode(&cp), b.RecordRev)
		if err != nil && !errors.Is(err, kvstore.ErrConflict) {
			return err
		}
		written = err == nil
		final = messages.Prior{Checkpoint: &cp, Revision: rev}
	}
	for !written {
		e, err := c.ckpts.Get(ctx, key)
		if err != nil {
			return fmt.Errorf("coordinator: complete batch %s: %w", key, err)
		}
		cp, err := messages.DecodeAs[*messages.Checkpoint](e.Value)
		if err != nil {
			return fmt.Errorf("coordinator: complete batch %s: %w", key, err)
		}
		if cp.Status.Terminal() {
			// Completed before a crash, perhaps on outcomes that arrived in another order: what
			// the checkpoint says stands.
			if cp.Summary != nil {
				b.Reason = cp.Summary.Reason
			}
			final = messages.Prior{Checkpoint: cp, Revision: e.Revision}
			break
		}
		cp.Status, cp.Summary, cp.EndedAt = messages.OpSucceeded, summary, time.Now().UnixNano()
		if rev, err := c.ckpts.Update(ctx, key, messages.MustEncode(cp), e.Revision); err == nil {
			final = messages.Prior{Checkpoint: cp, Revision: rev}
			break
		} else if !errors.Is(err, kvstore.ErrConflict) {
			return err
		}
	}
	if b.Next > b.Succeeded+b.Failed {
		notice := messages.MustEncode(&messages.Abandon{ExecutionID: b.ExecutionID, OpID: b.OpID, Path: b.Path})
		if err := c.nc.Publish(messages.AbandonSubject(b.ExecutionID), notice); err != nil {
			c.log.Debug("abandon notice not sent", "batch", key, "error", err)
		}
	}
	c.log.Debug("batch complete", "batch", key, "reason", b.Reason, "succeeded", b.Succeeded, "failed", b.Failed)
	c.endBatch(b)
	resume := &messages.RunTask{ExecutionID: b.ExecutionID, Function: b.Function, Path: b.Path, TaskID: "p." + b.OpID, Input: b.Input}
	if len(b.Prior) > 0 && outcomes != nil && final.Checkpoint != nil {
		// A small batch whose every outcome this coordinator folded: the resumed code replays
		// over what the task carries — the records before the batch, its outcomes, and its
		// completed record last (over the opened one) — and reads nothing.
		resume.Prior = append(append(slices.Clone(b.Prior), outcomes...), final)
	}
	return c.dispatch(ctx, resume, b.ResumeTrace)
}

// publishTasks publishes tasks asynchronously and waits for every PubAck; trace is the parent of
// their invocations' spans. With dedupe, each carries its Nats-Msg-Id, so that a task published
// before (by a coordinator that crashed, or whose PubAck was lost) is stored once; without, the
// caller knows that none of them was ever published, and the stream is spared the bookkeeping
// (about a tenth of a branch's cost).
func (c *Coordinator) publishTasks(ctx context.Context, tasks []*messages.RunTask, trace string, dedupe bool) error {
	futures := make([]*jsasync.Future, 0, len(tasks))
	for _, t := range tasks {
		f, err := c.sendTask(t, trace, dedupe)
		if err != nil {
			return err
		}
		futures = append(futures, f)
	}
	// A PubAck can be lost when a stream's leader changes; the publisher times such futures out
	// after 10 s, and this bound is the last resort.
	deadline := time.NewTimer(15 * time.Second)
	defer deadline.Stop()
	for _, f := range futures {
		select {
		case <-f.Done():
			if _, err := f.Result(); err != nil {
				return fmt.Errorf("coordinator: dispatch: %w", err)
			}
		case <-deadline.C:
			return errors.New("coordinator: dispatch: no PubAck within 15s")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// outcomeRef is a branch outcome message: which batch, which branch.
type outcomeRef struct {
	msg      jetstream.Msg
	key      string // batch key
	exec, op string
	index    int
}

// parseOutcome reads "$KV.<bucket>.<execution>.<op>.<index>.<partition>".
func parseOutcome(msg jetstream.Msg) (outcomeRef, error) {
	parts := strings.Split(msg.Subject(), ".")
	if len(parts) != 6 {
		return outcomeRef{}, fmt.Errorf("not a branch outcome subject: %s", msg.Subject())
	}
	i, err := strconv.Atoi(parts[4])
	if err != nil || i < 0 {
		return outcomeRef{}, fmt.Errorf("bad branch index in %s", msg.Subject())
	}
	return outcomeRef{msg: msg, key: batchKey(parts[2], parts[3]), exec: parts[2], op: parts[3], index: i}, nil
}

// consumeBatches pulls as consume does and hands the outcomes to handle as they arrive, each
// time with every outcome that has arrived meanwhile: one at a time when they trickle in, in
// groups when they pour.
func (c *Coordinator) consumeBatches(ctx context.Context, cons jetstream.Consumer, handle func(context.Context, []jetstream.Msg)) {
	in := make(chan jetstream.Msg, c.cfg.BatchSize)
	go func() {
		defer close(in)
		c.consume(ctx, cons, func(ctx context.Context, m jetstream.Msg) {
			select {
			case in <- m:
			case <-ctx.Done(): // stopping: unacked, it is redelivered
			}
		})
	}()
	for m := range in {
		msgs := []jetstream.Msg{m}
	more:
		for len(msgs) < c.cfg.BatchSize {
			select {
			case m, ok := <-in:
				if !ok {
					break more
				}
				msgs = append(msgs, m)
			default:
				break more
			}
		}
		if ctx.Err() != nil {
			continue // stopping: unacked, they are redelivered
		}
		handle(ctx, msgs)
	}
}

// handleOutcomes folds a batch of branch outcomes: per batch, apply them all, carry out the
// effects, store the state once, then ack.
func (c *Coordinator) handleOutcomes(ctx context.Context, part *partition, msgs []jetstream.Msg) {
	c.keepersDue() // the tasks it dispatches are acked as they run
	groups := map[string][]outcomeRef{}
	var order []string
	for _, m := range msgs {
		ref, err := parseOutcome(m)
		if err != nil {
			c.log.Warn("dropping a malformed branch outcome", "error", err)
			_ = m.Term()
			continue
		}
		if _, ok := groups[ref.key]; !ok {
			order = append(order, ref.key)
		}
		groups[ref.key] = append(groups[ref.key], ref)
	}
	// Batches are independent: their groups are folded at once (each batch's own group in order),
	// so that many small batches do not wait for each other's writes.
	var wg sync.WaitGroup
	sem := make(chan struct{}, maxParallelFolds)
	for _, key := range order {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c.foldGroup(ctx, part, key, groups[key])
		})
	}
	wg.Wait()
}

// maxParallelFolds bounds the batches one partition folds at once.
const maxParallelFolds = 32

// foldGroup folds one batch's outcomes and acks them (or leaves them to come again).
func (c *Coordinator) foldGroup(ctx context.Context, part *partition, key string, refs []outcomeRef) {
	early, err := c.applyOutcomes(ctx, part, key, refs)
	if errors.Is(err, kvstore.ErrNotFound) {
		// No batch has this key (a batch's state is stored before its first dispatch): nothing a
		// retry can mend.
		c.log.Warn("dropping branch outcomes", "batch", key, "error", err)
		for _, r := range refs {
			_ = r.msg.Term()
		}
		return
	}
	if err != nil {
		part.batches.drop(key)
		for _, r := range refs {
			c.retryLater(ctx, r.msg, err)
		}
		return
	}
	for _, r := range refs {
		switch early[r.index] {
		case outcomeEarly:
			_ = r.msg.NakWithDelay(100 * time.Millisecond) // ahead of the state: again later
		case outcomeUnreadable:
			_ = r.msg.Term() // not a branch outcome: nothing a retry can mend
		default:
			ack(r.msg)
		}
	}
}

// What applyOutcomes says of an outcome it did not fold.
const (
	outcomeEarly      = 1 // ahead of the stored state: to be applied again later
	outcomeUnreadable = 2 // not a branch outcome record (logged): dropped
)

// applyOutcomes folds refs into their batch and returns the branches whose outcomes it did not
// fold: outcomeEarly or outcomeUnreadable.
func (c *Coordinator) applyOutcomes(ctx context.Context, part *partition, key string, refs []outcomeRef) (map[int]int, error) {
	cache := part.batches
	cb, err := c.loadBatch(ctx, part, key)
	if err != nil {
		return nil, err
	}
	if cb.state.Completed {
		return nil, nil // late outcomes of abandoned branches: neither recorded in the result nor counted
	}
	if part.stopped.Has(cb.state.ExecutionID) {
		cache.drop(key)
		return nil, nil // the execution was cancelled or timed out: nothing more is dispatched
	}
	// Fold into a copy, so that a failure below leaves the cached state as stored.
	b := *cb.state
	b.Done, b.FailedBits = append([]byte(nil), b.Done...), append([]byte(nil), b.FailedBits...)
	var tasks []*messages.RunTask
	complete := false
	var skipped map[int]int
	skip := func(i, why int) {
		if skipped == nil {
			skipped = map[int]int{}
		}
		skipped[i] = why
	}
	// What this fold dispatches was never dispatched before if this coordinator opened the batch
	// and has stored every fold since (its state is the whole truth), and no outcome here was
	// folded before (by a coordinator that crashed before storing). Otherwise a branch it
	// dispatches may have been dispatched already: the task is deduplicated and, not fresh, checks
	// for its outcome before it runs.
	redo := !cb.trusted
	revs := make([]uint64, len(refs))
	for i, r := range refs {
		md, err := r.msg.Metadata()
		if err != nil || md.NumDelivered > 1 {
			redo = true
		}
		if err == nil {
			revs[i] = md.Sequence.Stream
		}
	}
	outcomes := cb.outcomes // nil: not kept
	ru := cb.rollup
	for k, r := range refs {
		value, err := c.ckpts.Unframe(ctx, r.msg.Subject(), r.msg.Data())
		if err != nil {
			ru.abandon() // this fold may not be stored: the rollup may no longer match the state
			return nil, err
		}
		cp, err := messages.PeekOutcome(value) // its kind and status are all the fold needs
		if err != nil || cp.OpKind != messages.OpBranch || !cp.Status.Terminal() {
			c.log.Warn("dropping a record that is not a branch outcome", "subject", r.msg.Subject(), "error", err)
			skip(r.index, outcomeUnreadable)
			continue
		}
		counted := !b.Completed && r.index < b.Next && !batch.Bit(b.Done, r.index)
		d := batch.Apply(&b, r.index, cp.Status == messages.OpFailed)
		if counted {
			if outcomes != nil {
				outcomes = keepOutcome(outcomes, revs[k], value)
			}
			if revs[k] == 0 {
				ru.abandon()
			}
			ru.add(c, revs[k], value)
		}
		if d.Early {
			skip(r.index, outcomeEarly)
		}
		for i := d.DispatchFrom; i < d.DispatchTo; i++ {
			if t := branchTask(&b, i); redo {
				tasks = append(tasks, again(t))
			} else {
				tasks = append(tasks, t)
			}
		}
		if d.Complete {
			complete = true
		}
	}
	if err := c.publishTasks(ctx, tasks, b.TraceParent, redo); err != nil {
		ru.abandon()
		return nil, err
	}
	if complete {
		if err := c.completeBatch(ctx, &b, outcomes, ru.finish(ctx, c)); err != nil {
			return nil, err
		}
	}
	rev, err := c.batches.Update(ctx, key, messages.MustEncode(&b), cb.rev)
	if err != nil {
		ru.abandon()
		return nil, err
	}
	if b.Completed {
		cache.drop(key)
	} else {
		cache.put(key, &cachedBatch{state: &b, rev: rev, outcomes: outcomes, trusted: cb.trusted, rollup: ru})
	}
	return skipped, nil
}

// keepOutcome adds a folded outcome record to those a resume task will carry, or returns nil
// (carry none) once they would be too large or one cannot be read.
func keepOutcome(kept []messages.Prior, rev uint64, value []byte) []messages.Prior {
	size := 0
	for _, p := range kept {
		size += len(p.Checkpoint.Result) + 64
	}
	cp, err := messages.DecodeAs[*messages.Checkpoint](value)
	if rev == 0 || err != nil || size+len(value) > maxCarriedOutcomeBytes {
		return nil
	}
	return append(kept, messages.Prior{Checkpoint: cp, Revision: rev})
}

func (c *Coordinator) loadBatch(ctx context.Context, part *partition, key string) (*cachedBatch, error) {
	if cb, ok := part.batches.get(key); ok {
		return cb, nil
	}
	e, err := c.batches.Get(ctx, key)
	if err != nil {
		// A branch outcome can arrive before its batch's state is stored: retry later.
		return nil, fmt.Errorf("coordinator: batch %s: %w", key, err)
	}
	b, err := messages.DecodeAs[*messages.Batch](e.Value)
	if err != nil {
		return nil, fmt.Errorf("coordinator: batch %s: %w", key, err)
	}
	// A batch this coordinator has not seen yet may belong to an execution stopped while another
	// coordinator drove it: read the execution once to know.
	if err := c.noteStopped(ctx, part.stopped, b.ExecutionID); err != nil {
		return nil, err
	}
	cb := &cachedBatch{state: b, rev: e.Revision}
	if !b.Completed {
		part.batches.put(key, cb)
	}
	return cb, nil
}

// noteStopped adds the execution to stopped if its stored state says it was stopped.
func (c *Coordinator) noteStopped(ctx context.Context, stopped *recent.Set, executionID string) error {
	e, err := c.execs.Get(ctx, executionID)
	if errors.Is(err, kvstore.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("coordinator: execution %s: %w", executionID, err)
	}
	if x, err := messages.DecodeAs[*messages.Execution](e.Value); err == nil && x.Status.Stopped() {
		stopped.Add(executionID)
	}
	return nil
}

// cachedBatch is a batch's state as last stored, with its revision.
type cachedBatch struct {
	state *messages.Batch
	rev   uint64
	// outcomes are the branch outcome records folded so far, with their revisions, kept for a
	// small batch this coordinator opened (it has seen all of them), so that the resume task can
	// carry them: nil when not kept.
	outcomes []messages.Prior
	// trusted: this coordinator created the batch and stored every fold of it since, so no task
	// of it was published that this state does not account for.
	trusted bool
	// rollup gathers the outcomes of a large batch this coordinator opened (nil: none).
	rollup *rollup
}

// maxCarriedOutcomeBytes bounds the outcome records a resume task carries.
const maxCarriedOutcomeBytes = 16 << 10

// maxCachedBatches bounds a partition's cache of running batches: the branch loop never reads a
// batch the event loop opened, and reads any other once (again once it was evicted).
const maxCachedBatches = 10_000
