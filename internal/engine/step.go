package engine

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetflow/jetflow/internal/telemetry"
	"github.com/jetflow/jetflow/messages"
)

// RetryPolicy is durable.RetryPolicy; see there for the meaning of each field.
type RetryPolicy struct {
	MaxAttempts        int
	InitialInterval    time.Duration
	MaxInterval        time.Duration
	BackoffCoefficient float64
	RetryIf            func(error) bool
}

// Defaults of SEMANTICS.md rule 24.
const (
	DefaultMaxAttempts        = 6
	DefaultInitialInterval    = 5 * time.Second
	DefaultMaxInterval        = 60 * time.Second
	DefaultBackoffCoefficient = 2.0
)

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = DefaultMaxAttempts
	}
	if p.InitialInterval <= 0 {
		p.InitialInterval = DefaultInitialInterval
	}
	if p.MaxInterval <= 0 {
		p.MaxInterval = DefaultMaxInterval
	}
	if p.MaxInterval < p.InitialInterval {
		p.MaxInterval = p.InitialInterval
	}
	if p.BackoffCoefficient < 1 {
		p.BackoffCoefficient = DefaultBackoffCoefficient
	}
	return p
}

// Delay is the backoff before the attempt after attempt (1-based): InitialInterval ×
// coefficient^(attempt−1), capped at MaxInterval, with full jitter, and never below the smaller
// of one second and InitialInterval.
func (p RetryPolicy) Delay(attempt int, rnd *rand.Rand) time.Duration {
	p = p.withDefaults()
	d := float64(p.InitialInterval) * math.Pow(p.BackoffCoefficient, float64(attempt-1))
	d = math.Min(d, float64(p.MaxInterval))
	jittered := time.Duration(rnd.Float64() * d)
	return max(jittered, min(time.Second, p.InitialInterval))
}

// StepOptions configure one step.
type StepOptions struct {
	Retry      RetryPolicy
	AtMostOnce bool
}

// StepContext is the durable.StepContext handed to step bodies.
type StepContext struct {
	context.Context
	c       *Context
	name    string
	attempt int
	once    sync.Once
	logger  *slog.Logger // made on first use
}

// Logger logs with the execution id, step name and attempt.
func (s *StepContext) Logger() *slog.Logger {
	s.once.Do(func() { s.logger = s.c.Logger().With("step", s.name, "attempt", s.attempt) })
	return s.logger
}

// Attempt is the 1-based attempt number.
func (s *StepContext) Attempt() int { return s.attempt }

// Step runs body under the step's retry policy and semantics, or returns its checkpointed outcome.
// The result is the body's msgpack encoding, as stored.
func (c *Context) Step(name string, o StepOptions, body func(*StepContext) ([]byte, error)) ([]byte, error) {
	inv := c.inv
	inv.stopped()
	op := c.nextOp()
	r, err := inv.visit(c, op, messages.OpStep, name)
	if err != nil {
		return nil, err
	}
	p := o.Retry.withDefaults()
	for {
		attempt := 1
		if r != nil {
			switch cp := r.cp; {
			case cp.Status == messages.OpSucceeded:
				return cp.Result, nil
			case cp.Status == messages.OpFailed:
				return nil, stepError(name, cp.Error)
			case cp.Status == messages.OpStarted:
				// An at-most-once attempt began and never recorded an outcome: it counts as failed.
				interrupted := &messages.ErrorInfo{Type: "StepInterrupted",
					Message: fmt.Sprintf("attempt %d was interrupted before it recorded an outcome", cp.Attempt)}
				r = c.afterFailure(op, name, p, r, cp.Attempt, interrupted, true)
				continue
			case cp.Status == messages.OpPending && !cp.Fired:
				c.suspend(messages.TimerRequest{OpID: op, FireAt: cp.FireAt, Kind: messages.TimerRetry})
			default: // pending and fired: the backoff is over
				attempt = cp.Attempt + 1
			}
		}
		if o.AtMostOnce {
			mark := &messages.Checkpoint{OpID: op, OpKind: messages.OpStep, Name: name, Status: messages.OpStarted,
				Attempt: attempt, StartedAt: inv.now().UnixNano()}
			got := c.commit(mark, r)
			r = got
			if got.cp != mark { // another worker moved the step on first: adopt its state
				continue
			}
		}
		started := inv.now().UnixNano()
		out, err := c.runBody(name, attempt, body)
		// A body cancelled by us (the worker stopping, the branch abandoned) records nothing: its
		// failure may be ours, and an abandoned branch's outcome counts for nothing.
		inv.interrupted(c, op)
		if err == nil {
			cp := &messages.Checkpoint{OpID: op, OpKind: messages.OpStep, Name: name,
				Status: messages.OpSucceeded, Result: out, Attempt: attempt, StartedAt: started,
				EndedAt: inv.now().UnixNano()}
			if r == nil && c.scope != nil {
				r = c.deferWrite(cp) // a branch's first-try step rides on its outcome record
			} else {
				r = c.commit(cp, r)
			}
			continue
		}
		retryable := p.RetryIf == nil || p.RetryIf(err)
		r = c.afterFailure(op, name, p, r, attempt, &messages.ErrorInfo{Type: TypeName(err), Message: err.Error()}, retryable)
	}
}

// afterFailure records a failed attempt: a pending retry, or the step's final failure.
func (c *Context) afterFailure(op, name string, p RetryPolicy, prev *record, attempt int,
	info *messages.ErrorInfo, retryable bool) *record {
	inv := c.inv
	now := inv.now()
	cp := &messages.Checkpoint{OpID: op, OpKind: messages.OpStep, Name: name, Attempt: attempt, Error: info}
	if retryable && attempt < p.MaxAttempts {
		cp.Status = messages.OpPending
		if inv.tel != nil {
			inv.tel.Retries.Add(c, 1)
		}
		cp.FireAt = now.Add(p.Delay(attempt, rand.New(rand.NewPCG(uint64(now.UnixNano()), uint64(attempt))))).UnixNano()
		c.Logger().Warn("step attempt failed; will retry", "step", name, "attempt", attempt, "error", info.Message,
			"retry_at", time.Unix(0, cp.FireAt))
	} else {
		cp.Status = messages.OpFailed
		cp.EndedAt = now.UnixNano()
	}
	return c.commit(cp, prev)
}

// runBody calls the step body, turning a panic into the attempt's error.
func (c *Context) runBody(name string, attempt int, body func(*StepContext) ([]byte, error)) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, &panicError{msg: fmt.Sprint(r), what: "step"}
		}
	}()
	ctx := c.Context
	if c.inv.traced(ctx) {
		var span trace.Span
		ctx, span = c.inv.tel.Tracer.Start(ctx, "jetflow.step "+name)
		if span.IsRecording() {
			span.SetAttributes(telemetry.KeyExecution.String(c.inv.execID), telemetry.KeyName.String(name), telemetry.KeyAttempt.Int(attempt))
		}
		defer func() {
			if err != nil {
				span.SetStatus(codes.Error, err.Error())
			}
			span.End()
		}()
	}
	sc := &StepContext{Context: ctx, attempt: attempt,
		c: c, name: name}
	return body(sc)
}

type panicError struct{ msg, what string }

func (e *panicError) Error() string         { return e.what + " panicked: " + e.msg }
func (e *panicError) ErrorTypeName() string { return "Panic" }

func stepError(name string, info *messages.ErrorInfo) error {
	if info == nil {
		info = &messages.ErrorInfo{Type: "Unknown", Message: "failed without a recorded error"}
	}
	return &StepError{Name: name, ErrorType: info.Type, Message: info.Message, Data: info.Data}
}
