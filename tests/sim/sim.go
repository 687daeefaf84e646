// Package sim is a deterministic simulation of jetflow's protocol: the coordinator's real decision
// code (lifecycle.Decide, batch.Open and batch.Apply) and the workers' protocol, driven by a
// simulated broker that delivers at least once — with duplicates, in any order, late — a
// simulated clock, and crashes of any participant between any two of its steps. Everything comes
// from one seed, so a failing seed replays exactly.
//
// The shells here follow the real services' order of effects step by step (see docs/DESIGN.md:
// what is stored before what is published, what is acked last); the real shells' I/O is exercised
// by the fault tests against embedded JetStream.
package sim

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"

	"github.com/jetflow/jetflow/coordinator/batch"
	"github.com/jetflow/jetflow/coordinator/lifecycle"
	"github.com/jetflow/jetflow/messages"
)

// errCrash is a participant crashing mid-way: it stops, nothing it held is acked.
type errCrash struct{}

func (errCrash) Error() string { return "crash" }

// msg is a message in a simulated stream.
type msg struct {
	stream    string // "evt", "task", "out"
	data      []byte // encoded message, or the outcome key for "out"
	notBefore int64  // a timer is not delivered before then
}

// world is one simulated system.
type world struct {
	rng   *rand.Rand
	now   int64
	queue []*msg          // unacked messages of every stream
	dedup map[string]bool // message ids seen
	kv    map[string]*entry
	crash float64 // probability of a crash at each step of a participant
	dup   float64 // probability that an ack is lost (the message comes again)

	crashes, redelivered int
	trace                func(format string, args ...any) // nil: quiet

	// What the checks need.
	violations []string
	inFlight   map[string]map[int]bool // execution → branches dispatched and without outcome
	mostFlight map[string]int
	batchCache map[string]cachedBatch // the coordinator's cache; lost in a crash
}

type cachedBatch struct {
	b   *messages.Batch
	rev uint64
	// trusted: this coordinator opened the batch (and has not crashed since), so every task of
	// the stored state is published: a repeated request dispatches nothing again.
	trusted bool
}

type entry struct {
	value []byte
	rev   uint64
}

func (w *world) violate(format string, args ...any) {
	w.violations = append(w.violations, fmt.Sprintf(format, args...))
}

// step is a point where the participant may crash.
func (w *world) step() {
	if w.rng.Float64() < w.crash {
		panic(errCrash{})
	}
}

func (w *world) publish(stream string, m messages.Message, id string, notBefore int64) {
	w.step()
	if id != "" {
		if w.dedup[id] {
			return
		}
		w.dedup[id] = true
	}
	w.queue = append(w.queue, &msg{stream: stream, data: messages.MustEncode(m), notBefore: notBefore})
	if t, ok := m.(*messages.RunTask); ok && len(t.Path) > 0 && t.Fresh {
		ref := t.Path[len(t.Path)-1]
		if w.kv[messages.CheckpointKey(t.ExecutionID, messages.BranchRecordID(t.ExecutionID, ref.OpID, ref.Index))] == nil {
			set := w.inFlight[t.ExecutionID]
			if set == nil {
				set = map[int]bool{}
				w.inFlight[t.ExecutionID] = set
			}
			set[ref.Index] = true
			w.mostFlight[t.ExecutionID] = max(w.mostFlight[t.ExecutionID], len(set))
		}
	}
}

// KV with create-if-absent and compare-and-set; writes to branch outcome keys also enter the
// outcome stream, as the real bucket's stream does.
func (w *world) get(key string) ([]byte, uint64) {
	w.step()
	e := w.kv[key]
	if e == nil {
		return nil, 0
	}
	return e.value, e.rev
}

func (w *world) write(key string, value []byte, rev uint64) bool {
	w.step()
	e := w.kv[key]
	if (e == nil) != (rev == 0) || (e != nil && e.rev != rev) {
		return false
	}
	w.checkFinal(key, e, value)
	next := &entry{value: value, rev: 1}
	if e != nil {
		next.rev = e.rev + 1
	}
	w.kv[key] = next
	if ref, ok := outcomeKey(key); ok {
		delete(w.inFlight[ref.exec], ref.index)
		w.queue = append(w.queue, &msg{stream: "out", data: []byte(key)})
	}
	return true
}

// checkFinal enforces invariants 2 and 5 on every write: a terminal checkpoint and a completed
// batch never change.
func (w *world) checkFinal(key string, old *entry, value []byte) {
	if old == nil {
		return
	}
	m, err := messages.Decode(old.value)
	if err != nil {
		return
	}
	switch m := m.(type) {
	case *messages.Checkpoint:
		if m.Status.Terminal() {
			w.violate("terminal checkpoint %s rewritten", key)
		}
	case *messages.Batch:
		if m.Completed {
			w.violate("completed batch %s rewritten", key)
		}
	}
}

type outcomeRef struct {
	exec, op string
	index    int
}

func outcomeKey(key string) (outcomeRef, bool) {
	var parts []string
	start := 0
	for i := 0; i < len(key); i++ {
		if key[i] == '.' {
			parts = append(parts, key[start:i])
			start = i + 1
		}
	}
	parts = append(parts, key[start:])
	if len(parts) != 4 {
		return outcomeRef{}, false
	}
	i, err := strconv.Atoi(parts[2])
	if err != nil {
		return outcomeRef{}, false
	}
	return outcomeRef{exec: parts[0], op: parts[1], index: i}, true
}

// deliver picks a deliverable message at random (any order) and hands it to its consumer. The
// message is acked only if the handler returns without crashing, and then may still come again.
func (w *world) deliver(p *plan) bool {
	var ready []int
	for i, m := range w.queue {
		if m.notBefore <= w.now {
			ready = append(ready, i)
		}
	}
	if len(ready) == 0 {
		return false
	}
	i := ready[w.rng.IntN(len(ready))]
	m := w.queue[i]
	if w.trace != nil {
		if dm, err := messages.Decode(m.data); err == nil {
			w.trace("t=%d deliver %s %T %+v", w.now, m.stream, dm, dm)
		} else {
			w.trace("t=%d deliver %s %s", w.now, m.stream, m.data)
		}
	}
	acked := func() bool {
		defer func() {
			if r := recover(); r != nil {
				if _, ok := r.(errCrash); !ok {
					panic(r)
				}
				w.batchCache = map[string]cachedBatch{} // the coordinator's memory is gone
				w.crashes++
				if w.trace != nil {
					w.trace("  crash")
				}
			}
		}()
		switch m.stream {
		case "evt":
			return w.coordinatorEvent(m)
		case "out":
			return w.coordinatorOutcome(string(m.data))
		case "task":
			return w.workerTask(m, p)
		}
		return false
	}()
	switch {
	case acked && w.rng.Float64() >= w.dup:
		i := slices.Index(w.queue, m)
		w.queue = slices.Delete(w.queue, i, i+1)
	case acked:
		w.redelivered++ // the ack was lost: the message comes again
	}
	return true
}

// --- the coordinator ------------------------------------------------------------------------------

func (w *world) coordinatorEvent(m *msg) bool {
	ev, err := messages.Decode(m.data)
	if err != nil {
		w.violate("undecodable event: %v", err)
		return true
	}
	var id string
	switch e := ev.(type) {
	case *messages.Timer:
		if w.now < e.Timer.FireAt {
			return false // held back: redelivered later
		}
		ev, id = &messages.TimerFired{ExecutionID: e.ExecutionID, Timer: e.Timer}, e.ExecutionID
	case *messages.StartExecution:
		id = e.ExecutionID
	case *messages.InvocationEnded:
		id = e.ExecutionID
	}
	for {
		raw, rev := w.get(id)
		var state *messages.Execution
		if raw != nil {
			state, _ = messages.DecodeAs[*messages.Execution](raw)
		}
		next, effects, err := lifecycle.Decide(state, ev)
		if err != nil {
			return true // dropped
		}
		if next != nil && raw == nil {
			// A new execution: its first effects are carried out while its state is written
			// (here: before it, the harder order), as the coordinator does.
			for _, eff := range effects {
				w.effect(eff)
			}
			if !w.write(id, messages.MustEncode(next), rev) {
				continue
			}
			return true
		}
		if next != nil && !w.write(id, messages.MustEncode(next), rev) {
			continue
		}
		for _, eff := range effects {
			w.effect(eff)
		}
		return true
	}
}

func (w *world) effect(eff lifecycle.Effect) {
	switch e := eff.(type) {
	case lifecycle.Dispatch:
		w.dispatch(&messages.RunTask{ExecutionID: e.ExecutionID, Function: e.Function, TaskID: e.TaskID, Path: e.Path})
	case lifecycle.ScheduleTimer:
		w.publish("evt", &messages.Timer{ExecutionID: e.ExecutionID, Timer: e.Timer},
			"timer."+e.ExecutionID+"."+e.Timer.OpID+"."+strconv.FormatInt(e.Timer.FireAt, 10), e.Timer.FireAt)
	case lifecycle.FireTimer:
		key := messages.CheckpointKey(e.ExecutionID, e.Timer.OpID)
		for {
			raw, rev := w.get(key)
			if raw == nil {
				return
			}
			cp, _ := messages.DecodeAs[*messages.Checkpoint](raw)
			if cp.Status != messages.OpPending || cp.FireAt != e.Timer.FireAt {
				return
			}
			cp.Status, cp.Fired = messages.OpSucceeded, true
			if w.write(key, messages.MustEncode(cp), rev) {
				return
			}
		}
	case lifecycle.OpenBatch:
		w.openBatch(e)
	}
}

func (w *world) dispatch(t *messages.RunTask) {
	w.publish("task", t, "run."+t.ExecutionID+"."+t.TaskID, 0)
}

func branchTask(b *messages.Batch, i int) *messages.RunTask {
	return &messages.RunTask{ExecutionID: b.ExecutionID, Function: b.Function, Fresh: true,
		Path: append(slices.Clone(b.Path), messages.BranchRef{OpID: b.OpID, Index: i}), TaskID: "b." + b.OpID + "." + strconv.Itoa(i)}
}

func (w *world) openBatch(e lifecycle.OpenBatch) {
	key := e.ExecutionID + "." + e.Request.OpID + ".batch"
	b, d := batch.Open(e.ExecutionID, e.Function, e.Request)
	// A record the opener left unstored is created together with the batch's state (at once, so
	// in either order here); both are stored before anything is dispatched.
	record := func() {
		if cp := e.Request.Checkpoint; cp != nil && e.Request.Revision == 0 {
			w.write(messages.CheckpointKey(e.ExecutionID, e.Request.OpID), messages.MustEncode(cp), 0) // stored before: it stands
		}
	}
	recordFirst := w.rng.IntN(2) == 0
	if recordFirst {
		record()
	}
	created := w.write(key, messages.MustEncode(b), 0)
	if !recordFirst {
		record()
	}
	if created {
		w.carryOut(b, d)
		if !b.Completed {
			w.batchCache[key] = cachedBatch{b: b, rev: w.kv[key].rev, trusted: true}
		}
		return
	}
	if cached, ok := w.batchCache[key]; ok && cached.trusted {
		return // opened here: its tasks are out
	}
	// Opened before: re-dispatch what is in flight, or complete again.
	raw, _ := w.get(key)
	b, _ = messages.DecodeAs[*messages.Batch](raw)
	if b.Completed {
		w.carryOut(b, batch.Decision{Complete: true, Reason: b.Reason})
	} else {
		batch.InFlight(b, func(i int) { w.dispatch(branchTask(b, i)) })
	}
}

func (w *world) carryOut(b *messages.Batch, d batch.Decision) {
	for i := d.DispatchFrom; i < d.DispatchTo; i++ {
		w.dispatch(branchTask(b, i))
	}
	if !d.Complete {
		return
	}
	key := messages.CheckpointKey(b.ExecutionID, b.OpID)
	for {
		raw, rev := w.get(key)
		cp, _ := messages.DecodeAs[*messages.Checkpoint](raw)
		if cp.Status.Terminal() {
			break
		}
		cp.Status, cp.Summary = messages.OpSucceeded, batch.Summary(b)
		if w.write(key, messages.MustEncode(cp), rev) {
			break
		}
	}
	w.dispatch(&messages.RunTask{ExecutionID: b.ExecutionID, Function: b.Function, Path: b.Path, TaskID: "p." + b.OpID})
}

func (w *world) coordinatorOutcome(key string) bool {
	ref, _ := outcomeKey(key)
	bkey := ref.exec + "." + ref.op + ".batch"
	for {
		cached, ok := w.batchCache[bkey]
		b, rev := cached.b, cached.rev
		if !ok {
			raw, r := w.get(bkey)
			if raw == nil {
				return false // before its batch: later
			}
			b, _ = messages.DecodeAs[*messages.Batch](raw)
			rev = r
		}
		if b.Completed {
			return true
		}
		raw, _ := w.get(key)
		cp, _ := messages.DecodeAs[*messages.Checkpoint](raw)
		next := *b
		next.Done, next.FailedBits = slices.Clone(b.Done), slices.Clone(b.FailedBits)
		d := batch.Apply(&next, ref.index, cp.Status == messages.OpFailed)
		if d.Early {
			return false // ahead of the stored state: again later
		}
		w.carryOut(&next, d) // effects first
		if !w.write(bkey, messages.MustEncode(&next), rev) {
			delete(w.batchCache, bkey)
			continue
		}
		w.batchCache[bkey] = cachedBatch{b: &next, rev: w.kv[bkey].rev, trusted: ok && cached.trusted}
		return true
	}
}

// --- the workers ----------------------------------------------------------------------------------

// plan is each execution's handler: one Parallel of branches whose outcomes and waits are fixed.
type plan struct {
	execs map[string]*execPlan
}

type execPlan struct {
	cfg   messages.BatchConfig
	fail  []bool // branch i fails
	waits []bool // branch i waits durably before finishing
}

func (w *world) workerTask(m *msg, p *plan) bool {
	t, err := messages.DecodeAs[*messages.RunTask](m.data)
	if err != nil {
		w.violate("undecodable task: %v", err)
		return true
	}
	raw, _ := w.get(t.ExecutionID)
	if raw == nil {
		return false
	}
	x, _ := messages.DecodeAs[*messages.Execution](raw)
	if x.Status.Terminal() {
		return true
	}
	ep := p.execs[t.ExecutionID]
	pkey := messages.CheckpointKey(t.ExecutionID, "1")
	praw, _ := w.get(pkey)
	var pcp *messages.Checkpoint
	if praw != nil {
		pcp, _ = messages.DecodeAs[*messages.Checkpoint](praw)
	}
	end := func(e *messages.InvocationEnded) {
		e.ExecutionID, e.TaskID, e.Path = t.ExecutionID, t.TaskID, t.Path
		w.publish("evt", e, "end."+t.ExecutionID+"."+t.TaskID, 0)
	}
	if len(t.Path) == 0 { // the handler
		switch {
		case pcp == nil:
			// The batch's record is left to the coordinator: the request carries it unstored.
			cfg := ep.cfg
			record := &messages.Checkpoint{OpID: "1", OpKind: messages.OpParallel, Status: messages.OpStarted, Batch: &cfg}
			end(&messages.InvocationEnded{Outcome: messages.OutcomeSuspended, Parallels: []messages.ParallelRequest{{OpID: "1", Config: ep.cfg, Checkpoint: record}}})
		case !pcp.Status.Terminal():
			end(&messages.InvocationEnded{Outcome: messages.OutcomeSuspended, Parallels: []messages.ParallelRequest{{OpID: "1", Config: ep.cfg}}})
		default:
			end(&messages.InvocationEnded{Outcome: messages.OutcomeCompleted, Result: w.rebuild(t.ExecutionID, pcp.Summary)})
		}
		return true
	}
	if pcp == nil || pcp.Status.Terminal() {
		return true // abandoned, or a stale task
	}
	i := t.Path[0].Index
	if ep.waits[i] {
		wkey := messages.CheckpointKey(t.ExecutionID, "1-"+strconv.Itoa(i+1)+"-1")
		wraw, _ := w.get(wkey)
		if wraw == nil {
			fire := w.now + 1 + w.rng.Int64N(20)
			if !w.write(wkey, messages.MustEncode(&messages.Checkpoint{OpID: "1-" + strconv.Itoa(i+1) + "-1", OpKind: messages.OpWait,
				Status: messages.OpPending, FireAt: fire}), 0) {
				return false
			}
			wraw, _ = w.get(wkey)
		}
		wcp, _ := messages.DecodeAs[*messages.Checkpoint](wraw)
		if wcp.Status != messages.OpSucceeded {
			end(&messages.InvocationEnded{Outcome: messages.OutcomeSuspended,
				Timers: []messages.TimerRequest{{OpID: wcp.OpID, FireAt: wcp.FireAt, Kind: messages.TimerWait, Path: t.Path}}})
			return true
		}
	}
	out := &messages.Checkpoint{OpID: messages.BranchRecordID(t.ExecutionID, "1", i), OpKind: messages.OpBranch, Status: messages.OpSucceeded,
		Result: []byte(strconv.Itoa(i * i))}
	if ep.fail[i] {
		out.Status, out.Result, out.Error = messages.OpFailed, nil, &messages.ErrorInfo{Type: "E", Message: "branch " + strconv.Itoa(i)}
	}
	w.write(messages.CheckpointKey(t.ExecutionID, out.OpID), messages.MustEncode(out), 0) // the first writer wins
	return true
}

// rebuild is the BatchResult of a completed batch, in a comparable form: one status per started
// branch (S, F, or - for abandoned) and the reason.
func (w *world) rebuild(exec string, s *messages.BatchSummary) []byte {
	out := []byte(s.Reason.String() + ":")
	for i := range s.Started {
		switch {
		case !batch.Bit(s.Done, i):
			out = append(out, '-')
		case batch.Bit(s.FailedBits, i):
			raw := w.kv[messages.CheckpointKey(exec, messages.BranchRecordID(exec, "1", i))]
			if raw == nil {
				w.violate("%s: branch %d counted failed without an outcome record", exec, i)
			}
			out = append(out, 'F')
		default:
			raw := w.kv[messages.CheckpointKey(exec, messages.BranchRecordID(exec, "1", i))]
			if raw == nil {
				w.violate("%s: branch %d counted succeeded without an outcome record", exec, i)
			}
			out = append(out, 'S')
		}
	}
	return out
}
