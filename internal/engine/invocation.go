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
	// Kind is Completed, Failed or Suspended; Aborted when the invocation could not finish for
	// reasons outside the handler (the store unreachable, the worker stopping): nothing is
	// reported and the task runs again.
	Kind   OutcomeKind
	Result []byte
	Error  *messages.ErrorInfo
	Timers []messages.TimerRequest
	Cause  error // why it was aborted
}

// OutcomeKind classifies an Outcome.
type OutcomeKind int

const (
	Completed OutcomeKind = iota + 1
	Failed
	Suspended
	Aborted
)

type record struct {
	cp  *messages.Checkpoint
	rev uint64
}

// Invocation is one run of a handler over an execution's checkpoints. Its methods are safe for
// concurrent use by the goroutines of one handler.
type Invocation struct {
	execID string
	store  Store
	ctx    context.Context // for store calls: ends when the worker stops
	logger *slog.Logger
	now    func() time.Time

	mu        sync.Mutex
	records   map[string]*record
	replaying bool
	timers    []messages.TimerRequest
	fatal     error // non-determinism: the execution fails whatever the handler does
	abort     error // infrastructure failure: the invocation ends unreported
}

// Config holds what an Invocation needs besides its checkpoints.
type Config struct {
	ExecutionID string
	Store       Store
	Logger      *slog.Logger     // nil: slog.Default()
	Now         func() time.Time // nil: time.Now
}

// Loaded is a checkpoint as read from the store.
type Loaded struct {
	Checkpoint *messages.Checkpoint
	Revision   uint64
}

// NewInvocation prepares a run over the given checkpoints.
func NewInvocation(ctx context.Context, cfg Config, checkpoints []Loaded) *Invocation {
	inv := &Invocation{
		execID:  cfg.ExecutionID,
		store:   cfg.Store,
		ctx:     ctx,
		logger:  cfg.Logger,
		now:     cfg.Now,
		records: make(map[string]*record, len(checkpoints)),
	}
	if inv.logger == nil {
		inv.logger = slog.Default()
	}
	if inv.now == nil {
		inv.now = time.Now
	}
	for _, l := range checkpoints {
		inv.records[l.Checkpoint.OpID] = &record{cp: l.Checkpoint, rev: l.Revision}
	}
	inv.replaying = len(checkpoints) > 0
	return inv
}

// Run calls h with input and waits until it returns or the invocation suspends.
func (inv *Invocation) Run(ctx context.Context, h Handler, input []byte) Outcome {
	root := newContext(ctx, inv, "")
	var (
		out      []byte
		err      error
		returned bool
		panicMsg string
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			if r := recover(); r != nil {
				panicMsg = fmt.Sprint(r)
				inv.logger.Error("handler panicked", "execution", inv.execID, "panic", panicMsg, "stack", string(debug.Stack()))
			}
		}()
		out, err = h(root, input)
		returned = true
	}()
	<-done
	root.cancel()

	inv.mu.Lock()
	defer inv.mu.Unlock()
	switch {
	case inv.abort != nil:
		return Outcome{Kind: Aborted, Cause: inv.abort}
	case inv.fatal != nil:
		return Outcome{Kind: Failed, Error: Info(inv.fatal)}
	case len(inv.timers) > 0:
		return Outcome{Kind: Suspended, Timers: inv.timers}
	case panicMsg != "":
		return Outcome{Kind: Failed, Error: &messages.ErrorInfo{Type: "Panic", Message: "handler panicked: " + panicMsg}}
	case !returned:
		return Outcome{Kind: Failed, Error: &messages.ErrorInfo{Type: "Goexit", Message: "handler exited its goroutine without returning"}}
	case err != nil:
		return Outcome{Kind: Failed, Error: Info(err)}
	}
	return Outcome{Kind: Completed, Result: out}
}

// suspend records that the invocation waits for t and ends the calling goroutine.
func (inv *Invocation) suspend(t messages.TimerRequest) {
	inv.mu.Lock()
	inv.timers = append(inv.timers, t)
	inv.mu.Unlock()
	runtime.Goexit()
}

// stopped ends the calling goroutine if the invocation has already suspended, failed or aborted:
// a handler that swallowed the end (a goroutine of its own, say) can do nothing more.
func (inv *Invocation) stopped() {
	inv.mu.Lock()
	over := inv.abort != nil || inv.fatal != nil || len(inv.timers) > 0
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

// visit returns the checkpoint at op, after checking that it is of the kind and name the handler
// now asks for. A mismatch poisons the invocation and returns the error.
func (inv *Invocation) visit(op string, kind messages.OpKind, name string) (*record, error) {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	r := inv.records[op]
	if r == nil || !r.cp.Status.Terminal() {
		inv.replaying = false
	}
	if r != nil && (r.cp.OpKind != kind || r.cp.Name != name) {
		err := &NonDeterminismError{
			ExecutionID: inv.execID, OpID: op,
			Want: fmt.Sprintf("%s %q", r.cp.OpKind, r.cp.Name),
			Got:  fmt.Sprintf("%s %q", kind, name),
		}
		if inv.fatal == nil {
			inv.fatal = err
		}
		return nil, err
	}
	return r, nil
}

func (inv *Invocation) isReplaying() bool {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	return inv.replaying
}

// commit writes cp over prev (nil: the first write). It returns what is stored afterwards: cp, or
// the record another writer stored first, which the caller then adopts.
func (inv *Invocation) commit(cp *messages.Checkpoint, prev *record) *record {
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
	e, err := inv.store.Get(inv.ctx, key)
	if err != nil {
		inv.fail(fmt.Errorf("engine: read checkpoint %s after a conflict: %w", key, err))
	}
	stored, err := messages.DecodeAs[*messages.Checkpoint](e.Value)
	if err != nil {
		inv.fail(fmt.Errorf("engine: checkpoint %s: %w", key, err))
	}
	return inv.remember(&record{cp: stored, rev: e.Revision})
}

func (inv *Invocation) remember(r *record) *record {
	inv.mu.Lock()
	inv.records[r.cp.OpID] = r
	inv.mu.Unlock()
	return r
}
