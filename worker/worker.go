package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetflow/jetflow/durable"
	"github.com/jetflow/jetflow/internal/engine"
	"github.com/jetflow/jetflow/internal/faults"
	"github.com/jetflow/jetflow/internal/jsasync"
	"github.com/jetflow/jetflow/internal/jspull"
	"github.com/jetflow/jetflow/internal/recent"
	"github.com/jetflow/jetflow/internal/telemetry"
	"github.com/jetflow/jetflow/internal/topology"
	"github.com/jetflow/jetflow/kvstore"
	"github.com/jetflow/jetflow/messages"
)

// Config configures a Worker. The zero value is ready to use.
type Config struct {
	// MaxConcurrent is the most invocations run at once. Default 256.
	MaxConcurrent int
	// AckWait is how long a task may go without a heartbeat before JetStream gives it to another
	// worker; heartbeats are sent every AckWait/3 while an invocation runs. Default 30s.
	AckWait time.Duration
	// Replicas is the replication factor of the streams and buckets it creates. Default 1.
	Replicas int
	// Logger receives the worker's logs and is the base of handlers' loggers. Default
	// slog.Default().
	Logger *slog.Logger
	// BranchCacheSize is how many batches' branch lists the worker keeps, so that their branches
	// run without replaying the handler. Default 1024.
	BranchCacheSize int
	// InlineBranches is the largest Parallel or Map the worker runs inline — every branch here,
	// inside the invocation that opens it, with no task, coordinator or resume — unless the batch
	// says where it runs (durable.WithPlacement). Default 16; negative: none (every batch goes to
	// the fleet).
	InlineBranches int
	// TracerProvider and MeterProvider receive the worker's spans (one per invocation, branch run
	// and step body run) and metrics. Default: the OpenTelemetry globals (no-ops unless the
	// program set them).
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
}

func (c *Config) withDefaults() (Config, error) {
	var cfg Config
	if c != nil {
		cfg = *c
	}
	switch {
	case cfg.MaxConcurrent < 0:
		return cfg, fmt.Errorf("worker: Config.MaxConcurrent must not be negative, got %d", cfg.MaxConcurrent)
	case cfg.AckWait < 0:
		return cfg, fmt.Errorf("worker: Config.AckWait must not be negative, got %s", cfg.AckWait)
	case cfg.AckWait > 0 && cfg.AckWait < 300*time.Millisecond:
		return cfg, fmt.Errorf("worker: Config.AckWait must be at least 300ms, got %s", cfg.AckWait)
	case cfg.Replicas < 0 || cfg.Replicas > 5:
		return cfg, fmt.Errorf("worker: Config.Replicas must be 0 to 5, got %d", cfg.Replicas)
	case cfg.BranchCacheSize < 0:
		return cfg, fmt.Errorf("worker: Config.BranchCacheSize must not be negative, got %d", cfg.BranchCacheSize)
	}
	if cfg.BranchCacheSize == 0 {
		cfg.BranchCacheSize = 1024
	}
	switch {
	case cfg.InlineBranches == 0:
		cfg.InlineBranches = engine.DefaultInlineBranches
	case cfg.InlineBranches < 0:
		cfg.InlineBranches = 0
	}
	if cfg.MaxConcurrent == 0 {
		cfg.MaxConcurrent = 256
	}
	if cfg.AckWait == 0 {
		cfg.AckWait = 30 * time.Second
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Logger = cfg.Logger.With("component", "worker")
	return cfg, nil
}

// Worker runs the handlers registered on it. Register before or after Start; Stop is safe to
// call twice.
type Worker struct {
	nc   *nats.Conn
	cfg  Config
	log  *slog.Logger
	sem  chan struct{}
	idle chan jetstream.Msg // tasks handed to an idle runner

	mu        sync.Mutex
	handlers  map[string]engine.Handler
	consuming map[string]jetstream.Consumer // functions whose consumer loop runs
	js        jetstream.JetStream
	execs     *kvstore.Store
	ckpts     *kvstore.Store
	batches   *kvstore.Store  // the coordinator's; the worker reads completed batches' rollups
	runCtx    context.Context // ends on Stop: no more fetching
	stopLoop  context.CancelFunc
	invCtx    context.Context // ends when Stop gives up waiting: in-flight invocations abort
	abortInv  context.CancelFunc
	loops     sync.WaitGroup
	inflight  sync.WaitGroup
	started   bool
	abandons  *nats.Subscription

	tel     *telemetry.Telemetry
	cache   *branchCache
	running *runningSet
	stopped *recent.Set // executions this worker heard were cancelled or timed out

	beatMu   sync.Mutex
	beats    map[jetstream.Msg]time.Time // tasks in hand, since when
	beatStop chan struct{}               // closed once nothing is in hand any more
	beatDone chan struct{}

	acks      chan pendingAck // outcome writes awaiting their PubAck, then the task's ack
	ackerDone chan struct{}
	closeAcks sync.Once
}

// New validates cfg (nil: defaults) and returns a Worker that is not yet running.
func New(nc *nats.Conn, cfg *Config) (*Worker, error) {
	if nc == nil {
		return nil, errors.New("worker: nil NATS connection")
	}
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	w := &Worker{nc: nc, cfg: c, log: c.Logger, sem: make(chan struct{}, c.MaxConcurrent), idle: make(chan jetstream.Msg),
		handlers: map[string]engine.Handler{}, consuming: map[string]jetstream.Consumer{},
		cache: newBranchCache(c.BranchCacheSize), running: newRunningSet(), stopped: recent.New(10_000),
		tel: telemetry.New(c.TracerProvider, c.MeterProvider)}
	if err := w.observeQueues(); err != nil {
		return nil, fmt.Errorf("worker: metrics: %w", err)
	}
	return w, nil
}

// Register makes h the handler of function on w. The input arrives as msgpack and is decoded into
// I; a bad input fails the execution with an error saying so. Register panics on an invalid
// function name (1–128 of [A-Za-z0-9_-]) or a function registered twice: both are programming
// errors.
func Register[I, O any](w *Worker, function string, h func(durable.Context, I) (O, error)) {
	if err := messages.ValidateFunction(function); err != nil {
		panic(fmt.Sprintf("worker: Register: %v", err))
	}
	w.register(function, func(ctx *engine.Context, raw []byte) ([]byte, error) {
		var in I
		if len(raw) > 0 {
			err := messages.CheckWellFormed(raw) // before msgpack allocates what a hostile input claims
			if err == nil {
				err = msgpack.Unmarshal(raw, &in)
			}
			if err != nil {
				return nil, &InputError{Function: function, Err: err}
			}
		}
		out, err := h(ctx, in)
		if err != nil {
			return nil, err
		}
		b, err := msgpack.Marshal(out)
		if err != nil {
			return nil, fmt.Errorf("worker: %s: encode result %T: %w", function, out, err)
		}
		return b, nil
	})
}

// InputError is an execution whose input does not decode into the handler's input type.
type InputError struct {
	Function string
	Err      error
}

func (e *InputError) Error() string {
	return fmt.Sprintf("worker: input of %s does not decode into the handler's input type: %v", e.Function, e.Err)
}
func (e *InputError) Unwrap() error         { return e.Err }
func (e *InputError) ErrorTypeName() string { return "InputError" }

func (w *Worker) register(function string, h engine.Handler) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, dup := w.handlers[function]; dup {
		panic(fmt.Sprintf("worker: Register: function %q registered twice", function))
	}
	w.handlers[function] = h
	if w.started {
		if err := w.startFunction(w.runCtx, function); err != nil {
			w.log.Error("cannot consume tasks of a function registered after Start", "function", function, "error", err)
		}
	}
}

// Functions lists the functions registered on w.
func (w *Worker) Functions() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]string, 0, len(w.handlers))
	for f := range w.handlers {
		out = append(out, f)
	}
	return out
}

// Start creates what is missing of jetflow's streams and buckets, and starts consuming the tasks
// of every registered function. It returns once running; the worker runs until Stop or ctx ends.
func (w *Worker) Start(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.started {
		return errors.New("worker: already started")
	}
	js, err := jetstream.New(w.nc, jetstream.WithPublishAsyncTimeout(10*time.Second), jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	if err := topology.Provision(ctx, js, topology.Options{Replicas: w.cfg.Replicas}); err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	if w.execs, err = kvstore.Open(ctx, js, messages.ExecutionBucket, topology.BlobBucket); err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	if w.ckpts, err = kvstore.Open(ctx, js, messages.CheckpointBucket, topology.BlobBucket); err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	if w.batches, err = kvstore.Open(ctx, js, messages.BatchBucket, topology.BlobBucket); err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	w.js = js
	if w.abandons, err = w.nc.Subscribe(messages.AbandonSubjects, w.onAbandon); err != nil {
		return fmt.Errorf("worker: subscribe to abandon notices: %w", err)
	}
	base := context.WithoutCancel(ctx)
	w.runCtx, w.stopLoop = context.WithCancel(base)
	w.invCtx, w.abortInv = context.WithCancel(base)
	w.acks, w.ackerDone = make(chan pendingAck, 4096), make(chan struct{})
	go w.acker()
	w.beats, w.beatStop, w.beatDone = map[jetstream.Msg]time.Time{}, make(chan struct{}), make(chan struct{})
	go w.beatLoop()
	for f := range w.handlers {
		if err := w.startFunction(ctx, f); err != nil {
			w.stopLoop()
			w.abortInv()
			return err
		}
	}
	w.started = true
	stop := w.stopLoop
	w.loops.Go(func() {
		select {
		case <-ctx.Done():
			stop()
		case <-w.runCtx.Done():
		}
	})
	w.log.Info("worker started", "functions", len(w.handlers), "max_concurrent", w.cfg.MaxConcurrent)
	return nil
}

// startFunction creates (or binds to) the function's shared consumer and starts its fetch loop.
// Called with w.mu held.
func (w *Worker) startFunction(ctx context.Context, function string) error {
	if w.consuming[function] != nil {
		return nil
	}
	cons, err := w.js.CreateOrUpdateConsumer(ctx, messages.TaskStream, jetstream.ConsumerConfig{
		Durable:       messages.ConsumerName(function),
		FilterSubject: messages.TaskFilter(function),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       w.cfg.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: 100_000,
	})
	if err != nil {
		return fmt.Errorf("worker: consumer for %s: %w", function, err)
	}
	w.consuming[function] = cons
	runCtx := w.runCtx
	w.loops.Go(func() { w.fetchLoop(runCtx, cons) })
	return nil
}

// Stop stops taking tasks and waits for the invocations in hand to finish, at most until ctx
// ends; then it aborts them unreported, and JetStream hands their tasks to another worker.
func (w *Worker) Stop(ctx context.Context) error {
	w.mu.Lock()
	stop, abort := w.stopLoop, w.abortInv
	w.mu.Unlock()
	if stop == nil {
		return nil
	}
	stop()
	w.mu.Lock()
	if w.abandons != nil {
		_ = w.abandons.Unsubscribe()
	}
	w.mu.Unlock()
	done := make(chan struct{})
	go func() {
		w.loops.Wait()
		w.inflight.Wait()
		w.closeAcks.Do(func() {
			close(w.beatStop)
			close(w.acks) // no more writes: the acker finishes what it holds
		})
		<-w.beatDone
		<-w.ackerDone
		close(done)
	}()
	select {
	case <-done:
		abort()
		return nil
	case <-ctx.Done():
		abort()
		<-done
		return fmt.Errorf("worker: stop: in-flight invocations aborted: %w", ctx.Err())
	}
}

// fetchLoop pulls the function's tasks continuously (a small prefetch keeps the pipe full) and
// runs each once a slot of MaxConcurrent is free, until ctx ends. It pulls through
// internal/jspull, which never drops a task the server delivered (docs/DESIGN.md, Clusters).
func (w *Worker) fetchLoop(ctx context.Context, cons jetstream.Consumer) {
	info := cons.CachedInfo()
	jspull.New(w.nc, w.log, info.Stream, info.Name, min(w.cfg.MaxConcurrent, prefetch), pullExpiry).Run(ctx, func(msg jetstream.Msg) {
		select {
		case w.sem <- struct{}{}:
		case <-ctx.Done():
			return // stopping: unacked, the task is redelivered
		}
		select {
		case w.idle <- msg: // a runner that finished its task takes this one
		default:
			w.inflight.Go(func() { w.runner(ctx, msg) })
		}
	})
}

// pullExpiry bounds one pull request for tasks; a request lost with its server is made again
// about a second after it was due to end.
const pullExpiry = 5 * time.Second

// runner handles msg, then the tasks handed to it while it waits idle, until it has waited
// runnerIdle or ctx ends (the worker stops taking tasks). Runners outlive their task, so that a
// task does not pay for a new goroutine and the growth of its stack.
func (w *Worker) runner(ctx context.Context, msg jetstream.Msg) {
	idle := time.NewTimer(runnerIdle)
	defer idle.Stop()
	for {
		w.handle(msg)
		<-w.sem
		idle.Reset(runnerIdle)
		select {
		case msg = <-w.idle:
		case <-idle.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

const runnerIdle = 10 * time.Second

// prefetch is how many tasks of a function a worker pulls ahead of the slots free to run them.
const prefetch = 64

func (w *Worker) handle(msg jetstream.Msg) {
	task, err := messages.DecodeAs[*messages.RunTask](msg.Data())
	if err != nil {
		w.log.Warn("dropping a malformed task", "subject", msg.Subject(), "error", err)
		_ = msg.Term()
		return
	}
	w.mu.Lock()
	h := w.handlers[task.Function]
	w.mu.Unlock()
	if h == nil {
		w.log.Warn("dropping a task for a function not registered here", "subject", msg.Subject(), "function", task.Function)
		_ = msg.Term()
		return
	}
	if w.stopped.Has(task.ExecutionID) {
		ack(msg) // the execution was cancelled or timed out: nothing of it runs any more
		return
	}
	log := &taskLog{base: w.log, task: task}
	md, _ := msg.Metadata() // nil: unknown, taken as a redelivery
	again := md == nil || md.NumDelivered > 1
	w.heartbeat(msg)
	defer w.unbeat(msg)

	// A branch of a batch this worker has replayed to runs straight from the cached branch list.
	var cached *engine.CachedBatch
	if n := len(task.Path); n > 0 {
		key := engine.BatchKey(task.ExecutionID, task.Path[n-1].OpID)
		b, abandoned := w.cache.lookup(key)
		if b == nil && !abandoned {
			// Another task of this batch may be replaying to it right now: wait for its branch
			// list rather than replay too.
			if wait, leader := w.cache.claim(key); leader {
				defer w.cache.release(key)
			} else {
				select {
				case <-wait:
				case <-w.invCtx.Done():
				}
				b, abandoned = w.cache.lookup(key)
			}
		}
		if abandoned {
			ack(msg)
			return
		}
		cached = b
	}
	input := task.Input
	if cached == nil && len(input) == 0 {
		e, err := w.execs.Get(w.invCtx, task.ExecutionID)
		if errors.Is(err, kvstore.ErrNotFound) {
			log.get().Warn("dropping a task for an execution that does not exist")
			_ = msg.Term()
			return
		}
		if err != nil {
			w.retryLater(msg, log, err)
			return
		}
		exec, err := messages.DecodeAs[*messages.Execution](e.Value)
		if err != nil {
			log.get().Error("dropping a task: unreadable execution record", "error", err)
			_ = msg.Term()
			return
		}
		if exec.Status.Terminal() {
			ack(msg) // a late duplicate: the execution is over
			return
		}
		input = exec.Input
	}
	// What to read before running. A branch of a batch this worker knows runs straight from the
	// cached branch list: on its first run it has no checkpoints and reads nothing; run again (a
	// redelivery, a resume after a wait) it reads each of its operations' records as it reaches
	// them. Anything else replays the handler over every stored checkpoint of the execution.
	var loaded []engine.Loaded // nil: not read
	var outcomes func(context.Context, *messages.Checkpoint) ([]engine.Loaded, error)
	verify, first := false, false
	switch {
	case cached != nil:
		verify = !task.Fresh || again
	case len(task.Prior) > 0 && !again:
		// The task carries the records its replay meets: for a small batch's branch, every record
		// before the batch (and the branch's own records nobody else writes); for the code a
		// small batch resumes, those and the batch's outcomes. What the resumed code meets after
		// the batch is checked one record at a time (verify).
		loaded = make([]engine.Loaded, 0, len(task.Prior))
		for _, p := range task.Prior {
			if p.Checkpoint != nil {
				loaded = append(loaded, engine.Loaded{Checkpoint: p.Checkpoint, Revision: p.Revision})
			}
		}
		verify = !task.Fresh
	case task.TaskID == messages.StartTaskID && !again:
		// An execution's first run: nothing to replay, but check each operation's record before
		// running it, in case a duplicate start ran before.
		verify, first = true, true
	default:
		if loaded, err = w.load(task.ExecutionID); err != nil {
			var corrupt *corruptError
			if errors.As(err, &corrupt) {
				w.report(w.invCtx, msg, log, &messages.InvocationEnded{ExecutionID: task.ExecutionID, TaskID: task.TaskID, Path: task.Path,
					Outcome: messages.OutcomeFailed, Error: &messages.ErrorInfo{Type: "CorruptCheckpoint", Message: err.Error()}})
				return
			}
			w.retryLater(msg, log, err)
			return
		}
		// A branch's first dispatch, delivered once, replays over a complete listing: what it
		// meets before its batch was final before the batch opened, and its own records nobody
		// else writes. Anything else may meet a record rewritten while the listing ran.
		verify = len(task.Path) == 0 || !task.Fresh || again
		// The listing holds the operations' records; a batch's branch outcomes are read when
		// the replay meets the batch.
		outcomes = w.outcomeReader(task.ExecutionID)
	}

	runCtx, cancel := context.WithCancel(w.invCtx)
	defer cancel()
	defer w.running.remove(task.ExecutionID, w.running.add(task.ExecutionID, task.Path, cancel))
	// The task's header names the parent of this invocation's span; whatever runs again later in
	// its place (after a timer, after a batch) is traced under that same parent.
	parent := telemetry.Extract(context.Background(), msg.Headers())
	resumeTrace := telemetry.TraceParent(parent)
	runCtx, span := w.startSpan(runCtx, parent, task, md)
	began := time.Now()
	defer func() { w.endSpan(span, task, began) }()
	inv := engine.NewInvocation(w.invCtx, engine.Config{ExecutionID: task.ExecutionID, Store: w.ckpts, Logger: w.cfg.Logger,
		Path: task.Path, Cache: w.cache, Listed: verify, FirstRun: first, DeferOutcome: true, Telemetry: w.tel,
		InlineBranches: w.cfg.InlineBranches, Outcomes: outcomes}, loaded)
	var out engine.Outcome
	if cached != nil {
		out = inv.RunCached(runCtx, cached)
	} else {
		out = inv.Run(runCtx, h, input)
	}
	span.outcome = out.Kind.String()
	if w.stopped.Has(task.ExecutionID) {
		span.outcome = "stopped"
		ack(msg) // stopped while it ran: whatever it did counts for nothing
		return
	}
	ended := &messages.InvocationEnded{ExecutionID: task.ExecutionID, TaskID: task.TaskID, Path: task.Path}
	switch out.Kind {
	case engine.Aborted:
		w.retryLater(msg, log, out.Cause)
		return
	case engine.BranchDone, engine.Abandoned:
		if out.Record != nil {
			w.writeOutcome(msg, log, task.ExecutionID, out.Record)
			return
		}
		ack(msg)
		return
	case engine.Completed:
		ended.Outcome, ended.Result = messages.OutcomeCompleted, out.Result
	case engine.Failed:
		ended.Outcome, ended.Error = messages.OutcomeFailed, out.Error
		span.failure = out.Error
		log.get().Info("execution failed", "error_type", out.Error.Type, "error", out.Error.Message)
	case engine.Suspended:
		ended.Outcome, ended.Timers, ended.Parallels = messages.OutcomeSuspended, out.Timers, out.Parallels
		for i := range ended.Timers {
			ended.Timers[i].ResumeTrace = resumeTrace
		}
		for i := range ended.Parallels {
			ended.Parallels[i].ResumeTrace = resumeTrace
		}
	}
	w.report(runCtx, msg, log, ended)
}

// writeOutcome stores a finished branch's outcome without waiting: the slot is free at once, and
// the acker acks the task when the write is acknowledged. A worker that dies in between leaves the
// task to be redelivered; run again, the branch finds its outcome (if stored) and stops.
func (w *Worker) writeOutcome(msg jetstream.Msg, log *taskLog, executionID string, rec *messages.Checkpoint) {
	key := messages.CheckpointKey(executionID, rec.OpID)
	data := messages.MustEncode(rec)
	f, ok, err := w.ckpts.CreateAsync(key, data)
	switch {
	case err != nil:
		w.retryLater(msg, log, err)
	case !ok: // too large for one message: the object store, synchronously
		if _, err := w.ckpts.Create(w.invCtx, key, data); err != nil && !errors.Is(err, kvstore.ErrConflict) {
			w.retryLater(msg, log, err)
			return
		}
		ack(msg)
	default:
		select {
		case w.acks <- pendingAck{f: f, msg: msg, log: log}:
		case <-w.invCtx.Done():
		}
	}
}

type pendingAck struct {
	f   *jsasync.Future
	msg jetstream.Msg
	log *taskLog
}

// acker acks tasks as their outcome writes are acknowledged, in order, until acks is closed or
// the worker aborts.
func (w *Worker) acker() {
	defer close(w.ackerDone)
	for p := range w.acks {
		select {
		case <-p.f.Done():
			if _, err := p.f.Result(); err == nil || kvstore.IsConflict(err) {
				ack(p.msg) // stored, or the first writer's outcome stands
			} else {
				w.retryLater(p.msg, p.log, err)
			}
		case <-w.invCtx.Done():
			return // aborted: the unacked tasks are redelivered
		}
	}
}

type corruptError struct{ err error }

func (e *corruptError) Error() string { return e.err.Error() }
func (e *corruptError) Unwrap() error { return e.err }

// load lists an execution's operation records ("<execution>.<op>"): not the branch outcome
// records of its batches ("<execution>.<op>.<i>[.<partition>]"), which the replay reads batch by
// batch (outcomeReader), so that a listing costs the same after a batch of 100,000 branches as
// after one of three.
func (w *Worker) load(executionID string) ([]engine.Loaded, error) {
	entries, err := w.ckpts.ListShallow(w.invCtx, executionID)
	if err != nil {
		return nil, err
	}
	return decodeEntries(entries)
}

func decodeEntries(entries []kvstore.Entry) ([]engine.Loaded, error) {
	loaded := make([]engine.Loaded, 0, len(entries))
	for _, en := range entries {
		cp, err := messages.DecodeAs[*messages.Checkpoint](en.Value)
		if err != nil {
			return nil, &corruptError{fmt.Errorf("unreadable checkpoint %s: %w", en.Key, err)}
		}
		loaded = append(loaded, engine.Loaded{Checkpoint: cp, Revision: en.Revision})
	}
	return loaded, nil
}

// outcomeReader returns what reads the branch outcome records of one of the execution's
// batches (engine.Config.Outcomes): its rollup when the coordinator stored one, else a listing
// of the batch's records.
func (w *Worker) outcomeReader(executionID string) func(context.Context, *messages.Checkpoint) ([]engine.Loaded, error) {
	return func(ctx context.Context, cp *messages.Checkpoint) ([]engine.Loaded, error) {
		if s := cp.Summary; s != nil && s.Rollup > 0 && cp.Status.Terminal() {
			loaded, err := w.readRollup(ctx, executionID, cp)
			if err == nil {
				return loaded, nil
			}
			w.log.Warn("reading a batch's branch records one by one: its rollup is unreadable", "execution", executionID, "batch", cp.OpID, "error", err)
		}
		list := w.ckpts.List // one batched direct get, for up to 64 keys
		if cp.Batch != nil && cp.Batch.N > 64 {
			list = w.ckpts.ListMany
		}
		entries, err := list(ctx, messages.CheckpointKey(executionID, cp.OpID))
		if err != nil {
			return nil, err
		}
		return decodeEntries(entries)
	}
}

// readRollup reads the parts of a completed batch's rollup at once, and checks that they hold
// an outcome record for every finished branch and nothing else.
func (w *Worker) readRollup(ctx context.Context, executionID string, cp *messages.Checkpoint) ([]engine.Loaded, error) {
	s := cp.Summary
	if s.Rollup > 8*len(s.Done) { // every part holds an outcome at least
		return nil, fmt.Errorf("rollup of %s.%s: %d parts for at most %d finished branches", executionID, cp.OpID, s.Rollup, 8*len(s.Done))
	}
	parts := make([][]engine.Loaded, s.Rollup)
	errs := make([]error, s.Rollup)
	var wg sync.WaitGroup
	reading := make(chan struct{}, 8) // parts read at once
	for k := range s.Rollup {
		reading <- struct{}{}
		wg.Go(func() {
			defer func() { <-reading }()
			parts[k], errs[k] = w.readRollupPart(ctx, executionID, cp.OpID, k)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	var loaded []engine.Loaded
	for _, p := range parts {
		loaded = append(loaded, p...)
	}
	seen := make(map[int]bool, len(loaded))
	for _, l := range loaded {
		i, ok := branchIndex(executionID, cp.OpID, l.Checkpoint.OpID)
		if !ok || seen[i] || i/8 >= len(s.Done) || s.Done[i/8]&(1<<(i%8)) == 0 {
			return nil, fmt.Errorf("rollup of %s.%s: record %q is not one of its finished branches'", executionID, cp.OpID, l.Checkpoint.OpID)
		}
		seen[i] = true
	}
	if len(seen) != s.Succeeded+s.Failed {
		return nil, fmt.Errorf("rollup of %s.%s: %d records for %d finished branches", executionID, cp.OpID, len(seen), s.Succeeded+s.Failed)
	}
	return loaded, nil
}

func (w *Worker) readRollupPart(ctx context.Context, executionID, op string, k int) ([]engine.Loaded, error) {
	e, err := w.batches.Get(ctx, messages.RollupKey(executionID, op, k))
	if err != nil {
		return nil, err
	}
	r, err := messages.DecodeAs[*messages.Rollup](e.Value)
	if err != nil {
		return nil, err
	}
	loaded := make([]engine.Loaded, 0, r.Count)
	err = r.Each(func(rev uint64, record []byte) error {
		cp, err := messages.DecodeAs[*messages.Checkpoint](record)
		if err != nil {
			return err
		}
		loaded = append(loaded, engine.Loaded{Checkpoint: cp, Revision: rev})
		return nil
	})
	return loaded, err
}

// branchIndex reads i from id = messages.BranchRecordID(executionID, op, i).
func branchIndex(executionID, op, id string) (int, bool) {
	rest, ok := strings.CutPrefix(id, op+".")
	if !ok {
		return 0, false
	}
	n, ok := strings.CutSuffix(rest, "."+strconv.Itoa(messages.Partition(executionID)))
	if !ok {
		return 0, false
	}
	i, err := strconv.Atoi(n)
	return i, err == nil && i >= 0 && strconv.Itoa(i) == n
}

// onAbandon handles a batch-complete notice: the batch's running branches here are cancelled,
// and its tasks still to come are dropped.
func (w *Worker) onAbandon(m *nats.Msg) {
	a, err := messages.DecodeAs[*messages.Abandon](m.Data)
	if err != nil {
		w.log.Warn("dropping a malformed abandon notice", "subject", m.Subject, "error", err)
		return
	}
	if a.OpID == "" { // the whole execution was stopped
		w.stopped.Add(a.ExecutionID)
		w.running.cancelExecution(a.ExecutionID)
		return
	}
	w.cache.abandon(engine.BatchKey(a.ExecutionID, a.OpID))
	w.running.cancelBranchesOf(a.ExecutionID, a.OpID)
}

// report publishes how the invocation ended, then acks the task. ctx's span (the invocation's) is
// the parent of any batch the report opens.
func (w *Worker) report(ctx context.Context, msg jetstream.Msg, log *taskLog, ended *messages.InvocationEnded) {
	ended.EndedAt = time.Now().UnixNano()
	data := messages.MustEncode(ended)
	if len(data) > messages.MaxEventSize {
		// A result too large for one message fails the execution with a clear error.
		ended.Outcome, ended.Result = messages.OutcomeFailed, nil
		ended.Error = &messages.ErrorInfo{Type: "ResultTooLarge",
			Message: fmt.Sprintf("the handler's result is %d bytes; the most an execution can return is %d", len(data), messages.MaxEventSize)}
		data = messages.MustEncode(ended)
	}
	out := &nats.Msg{Subject: messages.EventSubject(ended.ExecutionID, "end"), Data: data, Header: nats.Header{}}
	telemetry.Inject(ctx, out.Header)
	_, err := w.js.PublishMsg(w.invCtx, out, jetstream.WithMsgID("end."+ended.ExecutionID+"."+ended.TaskID))
	if err != nil {
		w.retryLater(msg, log, err)
		return
	}
	ack(msg)
}

func (w *Worker) retryLater(msg jetstream.Msg, log *taskLog, err error) {
	if w.invCtx.Err() != nil {
		return // stopping: JetStream redelivers after AckWait
	}
	log.get().Warn("invocation could not finish; its task will run again", "error", err)
	_ = msg.NakWithDelay(time.Second)
}

// heartbeat registers msg with the worker's heartbeat loop, which tells JetStream every
// AckWait/3 that the task is still being worked on, until unbeat.
func (w *Worker) heartbeat(msg jetstream.Msg) {
	w.beatMu.Lock()
	w.beats[msg] = time.Now()
	w.beatMu.Unlock()
}

// unbeat ends msg's heartbeats.
func (w *Worker) unbeat(msg jetstream.Msg) {
	w.beatMu.Lock()
	delete(w.beats, msg)
	w.beatMu.Unlock()
}

// beatLoop sends the heartbeats of every task held longer than a beat, until the worker has
// nothing in hand (or aborts).
func (w *Worker) beatLoop() {
	defer close(w.beatDone)
	every := w.cfg.AckWait / 3
	t := time.NewTicker(every)
	defer t.Stop()
	var due []jetstream.Msg
	for {
		select {
		case <-w.beatStop:
			return
		case <-w.invCtx.Done():
			return
		case now := <-t.C:
			due = due[:0]
			w.beatMu.Lock()
			for m, since := range w.beats {
				if now.Sub(since) >= every {
					due = append(due, m)
				}
			}
			w.beatMu.Unlock()
			for _, m := range due {
				_ = m.InProgress()
			}
		}
	}
}

// ack acknowledges a task unless a fault test drops the ack.
func ack(msg jetstream.Msg) {
	if !faults.DropAck(msg.Subject()) {
		_ = msg.Ack()
	}
}

// taskLog is the logger of one task, built on its first use: most tasks log nothing.
type taskLog struct {
	base *slog.Logger
	task *messages.RunTask
	l    *slog.Logger
}

func (t *taskLog) get() *slog.Logger {
	if t.l == nil {
		t.l = t.base.With("execution", t.task.ExecutionID, "function", t.task.Function, "task", t.task.TaskID)
	}
	return t.l
}
