package lifecycle

import (
	"errors"
	"fmt"
	"slices"

	"github.com/jetflow/jetflow/messages"
)

// Effect is something the shell must do after storing the new state.
type Effect interface{ isEffect() }

// Dispatch asks a worker to run (or replay) the execution's handler as invocation Seq.
type Dispatch struct {
	ExecutionID string
	Function    string
	Seq         uint64
}

// ScheduleTimer puts a durable timer in the timer stream.
type ScheduleTimer struct {
	ExecutionID string
	Timer       messages.TimerRequest
}

// FireTimer marks the timer's operation as due in its checkpoint: a Wait succeeds, a step's
// retry may run. It always comes before the Dispatch that replays the handler.
type FireTimer struct {
	ExecutionID string
	Timer       messages.TimerRequest
}

func (Dispatch) isEffect()      {}
func (ScheduleTimer) isEffect() {}
func (FireTimer) isEffect()     {}

// ErrUnknownExecution is an event about an execution that has no state: not a start, and no
// start seen. The shell drops it with a log line.
var ErrUnknownExecution = errors.New("lifecycle: event for an unknown execution")

// Decide folds ev into state (nil: no state yet). It returns the next state, nil when the state
// does not change, and the effects to carry out. state is not modified.
func Decide(state *messages.Execution, ev messages.Message) (*messages.Execution, []Effect, error) {
	switch ev := ev.(type) {
	case *messages.StartExecution:
		return start(state, ev)
	case *messages.InvocationEnded:
		if state == nil {
			return nil, nil, fmt.Errorf("%w: %s (invocation ended)", ErrUnknownExecution, ev.ExecutionID)
		}
		return ended(state, ev)
	case *messages.TimerFired:
		if state == nil {
			return nil, nil, fmt.Errorf("%w: %s (timer fired)", ErrUnknownExecution, ev.ExecutionID)
		}
		return fired(state, ev)
	}
	return nil, nil, fmt.Errorf("lifecycle: not an event: %T", ev)
}

func start(state *messages.Execution, ev *messages.StartExecution) (*messages.Execution, []Effect, error) {
	if state != nil {
		// A duplicate start (same execution name). Re-dispatch the first invocation only while
		// nothing else happened, in case the first attempt's dispatch was lost in a crash.
		if state.Status == messages.ExecutionRunning && state.RunSeq == 1 {
			return nil, []Effect{Dispatch{ExecutionID: state.ID, Function: state.Function, Seq: 1}}, nil
		}
		return nil, nil, nil
	}
	next := &messages.Execution{
		ID: ev.ExecutionID, Function: ev.Function, Input: ev.Input,
		Status: messages.ExecutionRunning, RunSeq: 1, CreatedAt: ev.RequestedAt,
	}
	return next, []Effect{Dispatch{ExecutionID: next.ID, Function: next.Function, Seq: 1}}, nil
}

func ended(state *messages.Execution, ev *messages.InvocationEnded) (*messages.Execution, []Effect, error) {
	if state.Status.Terminal() {
		return nil, nil, nil // an execution's outcome is final (invariant 5)
	}
	switch ev.Outcome {
	case messages.OutcomeCompleted, messages.OutcomeFailed:
		next := clone(state)
		next.Status = messages.ExecutionSucceeded
		next.Result = ev.Result
		if ev.Outcome == messages.OutcomeFailed {
			next.Status = messages.ExecutionFailed
			next.Result = nil
			next.Error = ev.Error
		}
		next.EndedAt = ev.EndedAt
		next.Timers = nil // pending timers are dropped when they fire
		return next, nil, nil
	case messages.OutcomeSuspended:
		var next *messages.Execution
		var effects []Effect
		for _, t := range ev.Timers {
			i := findTimer(state.Timers, t)
			if i >= 0 && state.Timers[i].FiredSeq != 0 {
				continue // fired already; a later invocation handles what follows
			}
			if i < 0 {
				if next == nil {
					next = clone(state)
				}
				next.Timers = append(next.Timers, messages.TimerState{TimerRequest: t})
			}
			effects = append(effects, ScheduleTimer{ExecutionID: state.ID, Timer: t})
		}
		return next, effects, nil
	}
	return nil, nil, fmt.Errorf("lifecycle: execution %s: unknown invocation outcome %d", state.ID, ev.Outcome)
}

func fired(state *messages.Execution, ev *messages.TimerFired) (*messages.Execution, []Effect, error) {
	if state.Status.Terminal() {
		return nil, nil, nil
	}
	fire := FireTimer{ExecutionID: state.ID, Timer: ev.Timer}
	if i := findTimer(state.Timers, ev.Timer); i >= 0 && state.Timers[i].FiredSeq != 0 {
		return nil, []Effect{fire, Dispatch{ExecutionID: state.ID, Function: state.Function, Seq: state.Timers[i].FiredSeq}}, nil
	}
	next := clone(state)
	next.RunSeq++
	if i := findTimer(next.Timers, ev.Timer); i >= 0 {
		next.Timers[i].FiredSeq = next.RunSeq
	} else {
		next.Timers = append(next.Timers, messages.TimerState{TimerRequest: ev.Timer, FiredSeq: next.RunSeq})
	}
	return next, []Effect{fire, Dispatch{ExecutionID: state.ID, Function: state.Function, Seq: next.RunSeq}}, nil
}

func findTimer(ts []messages.TimerState, t messages.TimerRequest) int {
	return slices.IndexFunc(ts, func(s messages.TimerState) bool {
		return s.OpID == t.OpID && s.FireAt == t.FireAt
	})
}

func clone(s *messages.Execution) *messages.Execution {
	c := *s
	c.Timers = slices.Clone(s.Timers)
	return &c
}
