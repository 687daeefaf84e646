package coordinator

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetflow/jetflow/coordinator/lifecycle"
	"github.com/jetflow/jetflow/internal/faults"
	"github.com/jetflow/jetflow/internal/jsasync"
	"github.com/jetflow/jetflow/internal/jspull"
	"github.com/jetflow/jetflow/internal/recent"
	"github.com/jetflow/jetflow/internal/telemetry"
	"github.com/jetflow/jetflow/internal/topology"
	"github.com/jetflow/jetflow/kvstore"
	"github.com/jetflow/jetflow/messages"
)

// Consumer names on the event and timer streams.
const (
	EventConsumer  = "coordinator"
	BranchConsumer = "coordinator-branches"
)

// Config configures a Coordinator. The zero value is ready to use.
type Config struct {
	// Replicas is the replication factor of the streams and buckets it creates. Default 1; use 3
	// on a 3-node NATS cluster.
	Replicas int
	// AckWait is how long an event may stay unacknowledged before JetStream redelivers it.
	// Default 30s.
	AckWait time.Duration
	// BatchSize is the most events fetched at once. Default 256.
	BatchSize int
	// Logger receives the coordinator's logs. Default slog.Default().
	Logger *slog.Logger
	// ID names this coordinator in its leases. Default: a random id.
	ID string
	// LeaseTTL is how long a partition lease lasts unless renewed (every LeaseTTL/3): how long a
	// dead coordinator's partitions wait before another takes them. Every coordinator of a system
	// must use the same value. Default 10s; at least 1s.
	LeaseTTL time.Duration
	// TracerProvider and MeterProvider receive the coordinator's spans (an execution's and each
	// batch's) and metrics. Default: the OpenTelemetry globals (no-ops unless the program set them).
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
}

func (c *Config) withDefaults() (Config, error) {
	var cfg Config
	if c != nil {
		cfg = *c
	}
	switch {
	case cfg.Replicas < 0 || cfg.Replicas > 5:
		return cfg, fmt.Errorf("coordinator: Config.Replicas must be 0 to 5, got %d", cfg.Replicas)
	case cfg.AckWait < 0:
		return cfg, fmt.Errorf("coordinator: Config.AckWait must not be negative, got %s", cfg.AckWait)
	case cfg.BatchSize < 0:
		return cfg, fmt.Errorf("coordinator: Config.BatchSize must not be negative, got %d", cfg.BatchSize)
	case cfg.LeaseTTL != 0 && cfg.LeaseTTL < time.Second:
		return cfg, fmt.Errorf("coordinator: Config.LeaseTTL must be at least 1s, got %s", cfg.LeaseTTL)
	case cfg.ID != "" && messages.ValidateExecutionID(cfg.ID) != nil:
		return cfg, fmt.Errorf("coordinator: Config.ID must be 1-128 of [A-Za-z0-9_-], got %q", cfg.ID)
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = 10 * time.Second
	}
	if cfg.ID == "" {
		cfg.ID = nuid.Next()
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.AckWait == 0 {
		cfg.AckWait = 30 * time.Second
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = 256
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Logger = cfg.Logger.With("component", "coordinator", "coordinator", cfg.ID)
	return cfg, nil
}

// Coordinator drives executions. Start it once; Stop is safe to call twice.
type Coordinator struct {
	nc  *nats.Conn
	cfg Config
	log *slog.Logger

	js      jetstream.JetStream
	pub     *jsasync.Publisher // the tasks it dispatches
	execs   *kvstore.Store
	ckpts   *kvstore.Store
	batches *kvstore.Store
	leases  jetstream.KeyValue

	tel   *telemetry.Telemetry
	spans *spanTable

	keepers   bool        // the work-queue streams let messages expire: keepers are placed (keeper.go)
	keeperDue atomic.Bool // keepers are to be placed with the next event

	mu      sync.Mutex
	held    []int              // partitions driven now, for Partitions
	parts   map[int]*partition // their state, for the in-flight gauge
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	started bool
}

// New validates cfg (nil: defaults) and returns a Coordinator that is not yet running.
func New(nc *nats.Conn, cfg *Config) (*Coordinator, error) {
	if nc == nil {
		return nil, errors.New("coordinator: nil NATS connection")
	}
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	co := &Coordinator{nc: nc, cfg: c, log: c.Logger, tel: telemetry.New(c.TracerProvider, c.MeterProvider),
		spans: newSpanTable(), parts: map[int]*partition{}}
	if err := co.observeInFlight(); err != nil {
		return nil, fmt.Errorf("coordinator: metrics: %w", err)
	}
	return co, nil
}

// Start creates what is missing of jetflow's streams and buckets and starts consuming. It returns
// once the coordinator is running; it runs until Stop or until ctx ends.
func (c *Coordinator) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		return errors.New("coordinator: already started")
	}
	js, err := jetstream.New(c.nc, jetstream.WithPublishAsyncTimeout(10*time.Second), jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return fmt.Errorf("coordinator: %w", err)
	}
	if err := topology.Provision(ctx, js, topology.Options{Replicas: c.cfg.Replicas, LeaseTTL: c.cfg.LeaseTTL}); err != nil {
		return fmt.Errorf("coordinator: %w", err)
	}
	if c.execs, err = kvstore.Open(ctx, js, messages.ExecutionBucket, topology.BlobBucket); err != nil {
		return fmt.Errorf("coordinator: %w", err)
	}
	if c.ckpts, err = kvstore.Open(ctx, js, messages.CheckpointBucket, topology.BlobBucket); err != nil {
		return fmt.Errorf("coordinator: %w", err)
	}
	if c.batches, err = kvstore.Open(ctx, js, messages.BatchBucket, topology.BlobBucket); err != nil {
		return fmt.Errorf("coordinator: %w", err)
	}
	if c.leases, err = js.KeyValue(ctx, messages.LeaseBucket); err != nil {
		return fmt.Errorf("coordinator: %w", err)
	}
	c.js = js
	if c.keepers, err = topology.AllowMsgTTL(ctx, js); err != nil {
		return fmt.Errorf("coordinator: %w", err)
	}
	if c.pub, err = jsasync.New(c.nc, 4096, 10*time.Second); err != nil {
		return fmt.Errorf("coordinator: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	a, err := c.serveAPI(runCtx)
	if err != nil {
		cancel()
		return fmt.Errorf("coordinator: public API: %w", err)
	}
	c.cancel = cancel
	c.started = true
	c.wg.Go(func() { c.leaseLoop(runCtx) })
	if c.keepers {
		c.keeperDue.Store(true)
		c.wg.Go(func() { c.keeperClock(runCtx.Done()) })
	}
	c.wg.Go(func() {
		<-runCtx.Done()
		a.stop()
	})
	c.wg.Go(func() { // Start's ctx bounds the coordinator's life too
		select {
		case <-ctx.Done():
			cancel()
		case <-runCtx.Done():
		}
	})
	c.log.Info("coordinator started", "id", c.cfg.ID)
	return nil
}

// runPartition creates (or binds to) the partition's consumers and runs its three loops until
// ctx ends.
func (c *Coordinator) runPartition(ctx context.Context, p int) error {
	suffix := "-p" + strconv.Itoa(p)
	events, err := c.js.CreateOrUpdateConsumer(ctx, messages.EventStream, jetstream.ConsumerConfig{
		Durable: EventConsumer + suffix, FilterSubject: messages.EventFilter(p), AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: c.cfg.AckWait, MaxDeliver: -1,
		// Timers that are not due are held back with a delayed nak and stay pending: no cap.
		MaxAckPending: -1,
	})
	if err != nil {
		return fmt.Errorf("coordinator: event consumer: %w", err)
	}
	branches, err := c.js.CreateOrUpdateConsumer(ctx, messages.CheckpointStream, jetstream.ConsumerConfig{
		Durable: BranchConsumer + suffix, FilterSubject: messages.BranchOutcomeFilter(p), AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: c.cfg.AckWait, MaxDeliver: -1, MaxAckPending: 16 * c.cfg.BatchSize,
	})
	if err != nil {
		return fmt.Errorf("coordinator: branch outcome consumer: %w", err)
	}
	part := &partition{execs: newBounded[cachedExec](maxCachedExecutions), batches: newBounded[*cachedBatch](maxCachedBatches), stopped: recent.New(maxRememberedStops)}
	c.mu.Lock()
	c.parts[p] = part
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.parts, p)
		c.mu.Unlock()
	}()
	var wg sync.WaitGroup
	wg.Go(func() {
		// Events of different executions are independent: they are handled in lanes, each
		// execution's in order in its own lane, so that one execution's writes do not hold up
		// the others'.
		lanes := make([]chan jetstream.Msg, eventLanes)
		var lanesWG sync.WaitGroup
		for i := range lanes {
			lanes[i] = make(chan jetstream.Msg, 64)
			lanesWG.Go(func() {
				for msg := range lanes[i] {
					c.handleEvent(ctx, part, msg)
				}
			})
		}
		c.consume(ctx, events, func(ctx context.Context, msg jetstream.Msg) {
			select {
			case lanes[laneOf(msg.Subject())] <- msg:
			case <-ctx.Done(): // stopping: unacked, it is redelivered
			}
		})
		for _, l := range lanes {
			close(l)
		}
		lanesWG.Wait()
	})
	wg.Go(func() {
		c.consumeBatches(ctx, branches, func(ctx context.Context, msgs []jetstream.Msg) { c.handleOutcomes(ctx, part, msgs) })
	})
	wg.Wait()
	return nil
}

// eventLanes is how many events of one partition are handled at once (of different executions).
const eventLanes = 8

// laneOf picks the lane of an event subject, "jetflow.evt.<p>.<execution>.<kind>", by execution.
func laneOf(subject string) int {
	parts := strings.SplitN(subject, ".", 5)
	if len(parts) < 4 {
		return 0
	}
	// Not the partition's hash: every execution of the partition has the same one.
	return int(maphash.String(laneSeed, parts[3]) % eventLanes)
}

var laneSeed = maphash.MakeSeed()

// partition is what a coordinator keeps about one partition while it drives it; born empty when
// the partition is taken.
type partition struct {
	execs   *bounded[cachedExec]   // execution states, for the event loop only
	batches *bounded[*cachedBatch] // running batches: opened by the event loop, folded by the branch loop
	stopped *recent.Set            // executions seen cancelled or timed out: their batches dispatch nothing more
}

// Stop stops consuming and waits, at most until ctx ends, for the event in hand to be finished.
// Unacknowledged events are redelivered to whichever coordinator runs next.
func (c *Coordinator) Stop(ctx context.Context) error {
	c.mu.Lock()
	cancel := c.cancel
	c.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	done := make(chan struct{})
	go func() { c.wg.Wait(); close(done) }()
	select {
	case <-done:
		c.pub.Close()
		return nil
	case <-ctx.Done():
		return fmt.Errorf("coordinator: stop: %w", ctx.Err())
	}
}

// consume hands each message of cons to handle, one at a time, until ctx ends. It pulls through
// internal/jspull, which never drops a delivered message: the jetstream package's Fetch could,
// when a pull request reached a busy server late, and the message came back only after AckWait.
func (c *Coordinator) consume(ctx context.Context, cons jetstream.Consumer, handle func(context.Context, jetstream.Msg)) {
	info := cons.CachedInfo()
	jspull.New(c.nc, c.log, info.Stream, info.Name, c.cfg.BatchSize, fetchExpiry).
		Run(ctx, func(msg jetstream.Msg) { handle(ctx, msg) })
}

func (c *Coordinator) handleEvent(ctx context.Context, part *partition, msg jetstream.Msg) {
	c.keepersDue()
	ctx = telemetry.Extract(ctx, msg.Headers()) // the sender's span: the parent of any span begun here
	ev, err := messages.Decode(msg.Data())
	if err != nil {
		c.log.Warn("dropping a malformed event", "subject", msg.Subject(), "error", err)
		_ = msg.Term()
		return
	}
	if t, ok := ev.(*messages.Timer); ok {
		// A durable timer waits among the events until it is due, then is applied as TimerFired.
		if wait := time.Until(time.Unix(0, t.Timer.FireAt)); wait > 0 {
			_ = msg.NakWithDelay(wait)
			return
		}
		ev = &messages.TimerFired{ExecutionID: t.ExecutionID, Timer: t.Timer, FiredAt: time.Now().UnixNano()}
	}
	id, err := eventExecution(ev)
	if err != nil {
		c.log.Warn("dropping an invalid event", "subject", msg.Subject(), "error", err)
		_ = msg.Term()
		return
	}
	// A start with a generated id, delivered for the first time, is of a new execution: its state
	// need not be read (a redelivery may follow a crash after the state was stored: read then).
	var fresh bool
	if start, ok := ev.(*messages.StartExecution); ok && start.NewID {
		md, err := msg.Metadata()
		fresh = err == nil && md.NumDelivered == 1
	}
	err = c.apply(ctx, part.execs, id, ev, fresh, func(ctx context.Context, effects []lifecycle.Effect) error {
		for _, eff := range effects {
			if err := c.carryOut(ctx, part, eff); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, lifecycle.ErrUnknownExecution) || errors.Is(err, errInvalid) {
			c.log.Warn("dropping an event", "subject", msg.Subject(), "error", err)
			_ = msg.Term()
			return
		}
		c.retryLater(ctx, msg, err)
		return
	}
	ack(msg)
}

var errInvalid = errors.New("coordinator: invalid event")

func eventExecution(ev messages.Message) (string, error) {
	var id string
	switch ev := ev.(type) {
	case *messages.StartExecution:
		if err := messages.ValidateFunction(ev.Function); err != nil {
			return "", err
		}
		id = ev.ExecutionID
	case *messages.InvocationEnded:
		id = ev.ExecutionID
	case *messages.TimerFired:
		id = ev.ExecutionID
	case *messages.CancelExecution:
		id = ev.ExecutionID
	default:
		return "", fmt.Errorf("%w: %T is not an event", errInvalid, ev)
	}
	return id, messages.ValidateExecutionID(id)
}

// apply folds ev into the stored state of execution id, retrying on a compare-and-set conflict,
// and carries out the effects with do. A new execution's state is written while its first effects
// are carried out (both are needed before the ack, in either order: Decide recreates whichever a
// crash lost); a change is written first, then the effects.
func (c *Coordinator) apply(ctx context.Context, cache *bounded[cachedExec], id string, ev messages.Message, fresh bool, do func(context.Context, []lifecycle.Effect) error) error {
	for {
		var state *messages.Execution
		var rev uint64
		var err error
		if !fresh {
			state, rev, err = c.loadExecution(ctx, cache, id)
		}
		fresh = false // a conflict below: read what is there
		if err != nil {
			return err
		}
		if start, ok := ev.(*messages.StartExecution); ok && state == nil && !c.spans.has(id) {
			ev = c.beginExecution(ctx, start)
		}
		next, effects, err := lifecycle.Decide(state, ev)
		if err != nil {
			return err
		}
		if next == nil {
			return do(ctx, effects)
		}
		data := messages.MustEncode(next)
		var newRev uint64
		done := false
		if rev == 0 {
			// The first task goes out first (the worker waits for it; the state only has to be
			// stored before the event is acked), then the state; then both are awaited.
			var sent sentTasks
			err = do(withSentTasks(ctx, &sent), effects)
			done = true
			if err == nil {
				f, ok, cerr := c.execs.CreateAsync(id, data)
				err = cerr
				if err == nil {
					err = sent.await(ctx)
				}
				switch {
				case err != nil:
				case ok:
					newRev, err = awaitPubAck(ctx, f)
				default: // too large for one message
					newRev, err = c.execs.Create(ctx, id, data)
				}
			}
		} else {
			newRev, err = c.execs.Update(ctx, id, data, rev)
		}
		if kvstore.IsConflict(err) {
			cache.drop(id)
			continue // someone else moved the state on: decide again on what they stored
		}
		if err != nil {
			cache.drop(id)
			return err
		}
		if next.Status.Terminal() {
			cache.drop(id) // nothing more will change it
		} else {
			cache.put(id, cachedExec{x: next, rev: newRev})
		}
		if !done {
			if err := do(ctx, effects); err != nil {
				return err
			}
		}
		if state == nil {
			c.tel.ExecutionsStarted.Add(ctx, 1, metric.WithAttributes(telemetry.KeyFunction.String(next.Function)))
		}
		if next.Status.Terminal() && (state == nil || !state.Status.Terminal()) {
			c.endExecution(ctx, next)
			c.log.Info("execution ended", "execution", id, "function", next.Function, "status", next.Status)
			// Best effort (waiters also poll). A small record rides along, so that a waiter need
			// not read it: it is exactly what was just stored.
			var payload []byte
			if len(data) <= maxAnnouncedRecord {
				payload = data
			}
			_ = c.nc.Publish(messages.EndedSubject(id), payload)
		}
		return nil
	}
}

// maxAnnouncedRecord is the largest execution record an end announcement carries.
const maxAnnouncedRecord = 64 << 10

// awaitPubAck waits for f's acknowledgement and returns the stored sequence (the revision).
func awaitPubAck(ctx context.Context, f *jsasync.Future) (uint64, error) {
	t := time.NewTimer(15 * time.Second)
	defer t.Stop()
	select {
	case <-f.Done():
		return f.Result()
	case <-t.C:
		return 0, errors.New("coordinator: no PubAck within 15s")
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// loadExecution returns the execution's state and revision (nil, 0 if it has none): from the
// partition's cache when this coordinator wrote it last, else from the store.
func (c *Coordinator) loadExecution(ctx context.Context, cache *bounded[cachedExec], id string) (*messages.Execution, uint64, error) {
	if e, ok := cache.get(id); ok {
		return e.x, e.rev, nil
	}
	e, err := c.execs.Get(ctx, id)
	switch {
	case errors.Is(err, kvstore.ErrNotFound):
		return nil, 0, nil
	case err != nil:
		return nil, 0, err
	}
	x, err := messages.DecodeAs[*messages.Execution](e.Value)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: stored state of %s: %w", errInvalid, id, err)
	}
	return x, e.Revision, nil
}

// cachedExec is an execution's state as this coordinator last stored it, with its revision: an
// event costs no read. Only the partition's event lanes use these (an execution's events are
// all in one lane).
type cachedExec struct {
	x   *messages.Execution
	rev uint64
}

const maxCachedExecutions = 10_000

func (c *Coordinator) carryOut(ctx context.Context, part *partition, eff lifecycle.Effect) error {
	switch eff := eff.(type) {
	case lifecycle.StopExecution:
		// The branch loop dispatches nothing more of it; workers cancel what runs and drop what
		// is queued (best effort: a task that slips through finds the execution ended).
		part.stopped.Add(eff.ExecutionID)
		notice := messages.MustEncode(&messages.Abandon{ExecutionID: eff.ExecutionID})
		if err := c.nc.Publish(messages.AbandonSubject(eff.ExecutionID), notice); err != nil {
			c.log.Debug("stop notice not sent", "execution", eff.ExecutionID, "error", err)
		}
	case lifecycle.Dispatch:
		t := &messages.RunTask{ExecutionID: eff.ExecutionID, Function: eff.Function, TaskID: eff.TaskID, Path: eff.Path}
		if len(eff.Input) <= maxCarriedInput {
			t.Input = eff.Input
		}
		return c.dispatch(ctx, t, eff.Trace)
	case lifecycle.OpenBatch:
		return c.openBatch(ctx, part.batches, eff)
	case lifecycle.ScheduleTimer:
		data := messages.MustEncode(&messages.Timer{ExecutionID: eff.ExecutionID, Timer: eff.Timer})
		_, err := c.js.Publish(ctx, messages.TimerSubject(eff.ExecutionID, eff.Timer.OpID), data,
			jetstream.WithMsgID(timerID("timer", eff.ExecutionID, eff.Timer)))
		if err != nil {
			return fmt.Errorf("coordinator: schedule timer %s/%s: %w", eff.ExecutionID, eff.Timer.OpID, err)
		}
	case lifecycle.FireTimer:
		return c.markFired(ctx, eff)
	default:
		return fmt.Errorf("coordinator: unknown effect %T", eff)
	}
	return nil
}

// dispatch publishes a task, deduplicated by its TaskID; trace (a traceparent) is the parent of the
// span of the invocation it causes.
func (c *Coordinator) dispatch(ctx context.Context, t *messages.RunTask, trace string) error {
	f, err := c.sendTask(t, trace, true)
	if err != nil {
		return err
	}
	if sent, ok := ctx.Value(sentTasksKey{}).(*sentTasks); ok {
		// The caller awaits the PubAck (sentTasks.await), after its own writes are on their way.
		sent.futures = append(sent.futures, f)
		return nil
	}
	if _, err := awaitPubAck(ctx, f); err != nil {
		return fmt.Errorf("coordinator: dispatch %s %s: %w", t.ExecutionID, t.TaskID, err)
	}
	return nil
}

// sendTask publishes t without waiting; trace is the parent of its invocation's span. With
// dedupe it carries its Nats-Msg-Id (see publishTasks).
func (c *Coordinator) sendTask(t *messages.RunTask, trace string, dedupe bool) (*jsasync.Future, error) {
	msg := &nats.Msg{Subject: messages.TaskSubject(t.Function, t.ExecutionID), Data: messages.MustEncode(t), Header: telemetry.Header(trace)}
	if dedupe {
		if msg.Header == nil {
			msg.Header = nats.Header{}
		}
		msg.Header.Set(jetstream.MsgIDHeader, taskMsgID(t))
	}
	f, err := c.pub.Publish(msg, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("coordinator: dispatch %s %s: %w", t.ExecutionID, t.TaskID, err)
	}
	return f, nil
}

// sentTasks collects the tasks dispatch published without waiting, for a caller that carries
// out effects while it has writes of its own to make (withSentTasks).
type sentTasks struct{ futures []*jsasync.Future }

type sentTasksKey struct{}

func withSentTasks(ctx context.Context, s *sentTasks) context.Context {
	return context.WithValue(ctx, sentTasksKey{}, s)
}

// await waits for the PubAck of every task sent.
func (s *sentTasks) await(ctx context.Context) error {
	for _, f := range s.futures {
		if _, err := awaitPubAck(ctx, f); err != nil {
			return fmt.Errorf("coordinator: dispatch: %w", err)
		}
	}
	return nil
}

func taskMsgID(t *messages.RunTask) string { return "run." + t.ExecutionID + "." + t.TaskID }

// markFired records in the timer's checkpoint that it is due: a Wait succeeds, a step's retry
// may run. It does nothing if the checkpoint has moved on.
func (c *Coordinator) markFired(ctx context.Context, eff lifecycle.FireTimer) error {
	key := messages.CheckpointKey(eff.ExecutionID, eff.Timer.OpID)
	for {
		e, err := c.ckpts.Get(ctx, key)
		if errors.Is(err, kvstore.ErrNotFound) {
			c.log.Warn("timer fired for an operation with no checkpoint", "execution", eff.ExecutionID, "op", eff.Timer.OpID)
			return nil
		}
		if err != nil {
			return err
		}
		cp, err := messages.DecodeAs[*messages.Checkpoint](e.Value)
		if err != nil {
			c.log.Warn("timer fired for an unreadable checkpoint", "key", key, "error", err)
			return nil
		}
		if cp.Status != messages.OpPending || cp.FireAt != eff.Timer.FireAt || cp.Fired {
			return nil
		}
		if cp.OpKind == messages.OpWait {
			cp.Status = messages.OpSucceeded
			cp.EndedAt = time.Now().UnixNano()
		}
		cp.Fired = true
		_, err = c.ckpts.Update(ctx, key, messages.MustEncode(cp), e.Revision)
		if errors.Is(err, kvstore.ErrConflict) {
			continue
		}
		return err
	}
}

func (c *Coordinator) retryLater(ctx context.Context, msg jetstream.Msg, err error) {
	if ctx.Err() != nil {
		return // stopping: the message is redelivered after AckWait
	}
	c.log.Warn("will retry a message", "subject", msg.Subject(), "error", err)
	_ = msg.NakWithDelay(time.Second)
}

func timerID(prefix, exec string, t messages.TimerRequest) string {
	return prefix + "." + exec + "." + t.OpID + "." + strconv.FormatInt(t.FireAt, 10)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// fetchExpiry bounds one pull request. A pull request does not survive a server restart: a
// consumer may stay deaf for this and a second more after one (jspull).
const fetchExpiry = time.Second

// maxRememberedStops bounds the executions a partition remembers as stopped; one forgotten is
// read again from the store when its batch is next loaded.
const maxRememberedStops = 10_000

// maxCarriedInput is the largest input a task carries; a larger one the worker reads itself.
const maxCarriedInput = 64 << 10

// ack acknowledges a message unless a fault test drops the ack; a lost ack means a redelivery,
// which every handler here takes as a no-op.
func ack(msg jetstream.Msg) {
	if !faults.DropAck(msg.Subject()) {
		_ = msg.Ack()
	}
}
