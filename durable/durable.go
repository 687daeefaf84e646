package durable

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/jetflow/jetflow/internal/engine"
)

// Context is passed to handlers, branches, map items and child contexts. It is a
// context.Context: it is cancelled when the execution is cancelled, the branch is abandoned, or
// the worker running it stops.
//
// Durable operations must be called with the Context jetflow handed in (or one it handed to a
// child); a Context wrapped by context.WithValue and the like is not one.
type Context interface {
	context.Context
	ExecutionID() string
	Logger() *slog.Logger // quiet while replaying
	IsReplaying() bool
}

// StepContext is passed to step bodies. It has no durable operations: steps do not nest.
type StepContext interface {
	context.Context
	Logger() *slog.Logger
	Attempt() int // 1-based
}

// StepError is a step that failed after its retries: the type name and message of the error its
// body returned, the same live and on replay.
type StepError = engine.StepError

// ChildContextError is a child context whose function failed with an error other than a step's.
type ChildContextError = engine.ChildContextError

// NonDeterminismError is replay finding a different operation (kind or name) at a position than
// the one checkpointed there. The execution fails with it, whatever the handler does next.
type NonDeterminismError = engine.NonDeterminismError

// ErrNotDurableContext is returned by an operation called with a Context jetflow did not create.
var ErrNotDurableContext = errors.New("durable: not a jetflow durable context (operations need the Context passed to the handler)")

func impl(ctx Context) (*engine.Context, error) {
	c, ok := ctx.(*engine.Context)
	if !ok {
		return nil, ErrNotDurableContext
	}
	return c, nil
}

// Step runs fn as a durable step: its outcome is checkpointed, and on replay the checkpoint is
// returned without running fn. A failed attempt is retried under the step's retry policy (by
// default 6 attempts with exponential backoff from 5 s); the invocation suspends during the
// backoff. The final failure is returned as a *StepError.
//
// The result reaches the caller as it would after a round trip through msgpack, the first time
// and on replay alike.
func Step[O any](ctx Context, name string, fn func(StepContext) (O, error), opts ...StepOption) (O, error) {
	var zero O
	c, err := impl(ctx)
	if err != nil {
		return zero, err
	}
	var so stepOptions
	for _, o := range opts {
		o(&so)
	}
	raw, err := c.Step(name, engine.StepOptions{Retry: engine.RetryPolicy(so.retry), AtMostOnce: so.semantics == AtMostOncePerRetry},
		func(sc *engine.StepContext) ([]byte, error) {
			out, err := fn(sc)
			if err != nil {
				return nil, err
			}
			b, err := msgpack.Marshal(out)
			if err != nil {
				return nil, fmt.Errorf("durable: step %q: encode result: %w", name, err)
			}
			return b, nil
		})
	if err != nil {
		return zero, err
	}
	return decode[O](raw, "step", name)
}

// RunInChildContext runs fn in a child context: its operations are numbered under the child,
// and its outcome is checkpointed, so on replay of a finished child fn does not run at all.
func RunInChildContext[O any](ctx Context, name string, fn func(Context) (O, error)) (O, error) {
	var zero O
	c, err := impl(ctx)
	if err != nil {
		return zero, err
	}
	raw, err := c.RunChild(name, func(child *engine.Context) ([]byte, error) {
		out, err := fn(child)
		if err != nil {
			return nil, err
		}
		b, err := msgpack.Marshal(out)
		if err != nil {
			return nil, fmt.Errorf("durable: child context %q: encode result: %w", name, err)
		}
		return b, nil
	})
	if err != nil {
		return zero, err
	}
	return decode[O](raw, "child context", name)
}

// Wait is a durable timer: the invocation suspends, holds no worker while it waits, and the
// handler is replayed when d has passed — on any worker, after any restart. d must be positive.
func Wait(ctx Context, name string, d time.Duration) error {
	c, err := impl(ctx)
	if err != nil {
		return err
	}
	return c.Wait(name, d)
}

func decode[O any](raw []byte, what, name string) (O, error) {
	var out O
	if len(raw) == 0 {
		return out, nil
	}
	if err := msgpack.Unmarshal(raw, &out); err != nil {
		return out, fmt.Errorf("durable: %s %q: decode checkpointed result into %T: %w", what, name, out, err)
	}
	return out, nil
}
