package lifecycle

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/jetflow/jetflow/messages"
)

// Effect is something the shell must do after storing the new state.
type Effect interface{ isEffect() }

// Dispatch asks a worker to run (or replay) the handler — or, with a Path, one branch. TaskID
// names the cause, so a repeated Dispatch is deduplicated.
type Dispatch struct {
	ExecutionID string
	Function    string
	TaskID      string
	Path        []messages.BranchRef
	Input       []byte // the execution's input, for the worker's convenience
	Trace       string // W3C traceparent: the parent of the invocation's span
}

// ScheduleTimer puts a durable timer in the timer stream.
type ScheduleTimer struct {
	ExecutionID string
	Timer       messages.TimerRequest
}

// FireTimer marks the timer's operation as due in its checkpoint: a Wait succeeds, a step's
// retry may run. It always comes before the Dispatch that replays the waiting code.
type FireTimer struct {
	ExecutionID string
	Timer       messages.TimerRequest
}

// OpenBatch starts the branches of a Parallel or Map, unless they were started already.
type OpenBatch struct {
	ExecutionID string
	Function    string
	Request     messages.ParallelRequest
	Input       []byte // the execution's input, for the worker's convenience
}

// StopExecution tells the fleet that the execution was stopped (cancelled or timed out): every
// running piece of it is cancelled, and nothing more of it is dispatched.
type StopExecution struct {
	ExecutionID string
}

func (StopExecution) isEffect() {}
func (Dispatch) isEffect()      {}
func (ScheduleTimer) isEffect() {}
func (FireTimer) isEffect()     {}
func (OpenBatch) isEffect()     {}

// ErrUnknownExecution is an event about an execution that has no state: not a start, and no
// start seen. The shell drops it with a log line.
var ErrUnknownExecution = errors.New("lifecycle: event for an unknown execution")

// StartTaskID is the TaskID of an execution's first invocation.
const StartTaskID = messages.StartTaskID

// TimerTaskID is the TaskID of the invocation a fired timer causes.
func TimerTaskID(t messages.TimerRequest) string {
	return "t." + t.OpID + "." + strconv.FormatInt(t.FireAt, 10)
}

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
	case *messages.CancelExecution:
		if state == nil {
			return nil, nil, fmt.Errorf("%w: %s (cancel)", ErrUnknownExecution, ev.ExecutionID)
		}
		return cancel(state, ev)
	}
	return nil, nil, fmt.Errorf("lifecycle: not an event: %T", ev)
}

func start(state *messages.Execution, ev *messages.StartExecution) (*messages.Execution, []Effect, error) {
	if state != nil {
		// A duplicate start (same execution name). While the execution runs, dispatch its first
		// invocation again, in case a crash lost it: deduplicated, or at worst a harmless replay.
		if state.Status == messages.ExecutionRunning {
			return nil, startEffects(state), nil
		}
		return nil, nil, nil
	}
	next := &messages.Execution{
		ID: ev.ExecutionID, Function: ev.Function, Input: ev.Input,
		Status: messages.ExecutionRunning, CreatedAt: ev.RequestedAt, TraceParent: ev.TraceParent,
	}
	if ev.Timeout > 0 {
		next.Deadline = ev.RequestedAt + ev.Timeout
	}
	return next, startEffects(next), nil
}

// startEffects dispatches an execution's first invocation and schedules its timeout, if any.
func startEffects(x *messages.Execution) []Effect {
	effects := []Effect{Dispatch{ExecutionID: x.ID, Function: x.Function, TaskID: StartTaskID, Input: x.Input, Trace: x.TraceParent}}
	if x.Deadline > 0 {
		effects = append(effects, ScheduleTimer{ExecutionID: x.ID,
			Timer: messages.TimerRequest{OpID: messages.TimeoutTimerOp, FireAt: x.Deadline, Kind: messages.TimerTimeout}})
	}
	return effects
}

// cancel stops a running execution. Cancelling a cancelled execution repeats the stop (a crash may
// have lost it); cancelling one that ended otherwise does nothing.
func cancel(state *messages.Execution, ev *messages.CancelExecution) (*messages.Execution, []Effect, error) {
	stop := []Effect{StopExecution{ExecutionID: state.ID}}
	switch {
	case state.Status == messages.ExecutionCancelled:
		return nil, stop, nil
	case state.Status.Terminal():
		return nil, nil, nil
	}
	msg := ev.Reason
	if msg == "" {
		msg = "the execution was cancelled"
	}
	next := clone(state)
	next.Status, next.Error, next.Result = messages.ExecutionCancelled, &messages.ErrorInfo{Type: "Cancelled", Message: msg}, nil
	next.EndedAt = max(ev.RequestedAt, state.CreatedAt)
	next.Timers = nil
	return next, stop, nil
}

// timedOut stops a running execution whose timeout fired.
func timedOut(state *messages.Execution, ev *messages.TimerFired) (*messages.Execution, []Effect, error) {
	stop := []Effect{StopExecution{ExecutionID: state.ID}}
	switch {
	case state.Status == messages.ExecutionTimedOut:
		return nil, stop, nil
	case state.Status.Terminal():
		return nil, nil, nil
	}
	next := clone(state)
	next.Status, next.Result = messages.ExecutionTimedOut, nil
	next.Error = &messages.ErrorInfo{Type: "TimedOut", Message: "the execution did not end within its timeout of " +
		time.Duration(state.Deadline-state.CreatedAt).String()}
	next.EndedAt = ev.FiredAt
	next.Timers = nil
	return next, stop, nil
}

func ended(state *messages.Execution, ev *messages.InvocationEnded) (*messages.Execution, []Effect, error) {
	if state.Status.Terminal() {
		return nil, nil, nil // an execution's outcome is final (invariant 5)
	}
	switch ev.Outcome {
	case messages.OutcomeCompleted, messages.OutcomeFailed:
		if ev.Outcome == messages.OutcomeCompleted && len(ev.Path) > 0 {
			return nil, nil, nil // a branch's completion is counted from its checkpoint, not here
		}
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
			if i >= 0 && state.Timers[i].Fired {
				continue // fired already; the invocation it caused handles what follows
			}
			if i < 0 {
				if next == nil {
					next = clone(state)
				}
				next.Timers = append(next.Timers, messages.TimerState{TimerRequest: t})
			}
			effects = append(effects, ScheduleTimer{ExecutionID: state.ID, Timer: t})
		}
		for _, p := range ev.Parallels {
			effects = append(effects, OpenBatch{ExecutionID: state.ID, Function: state.Function, Request: p, Input: state.Input})
		}
		return next, effects, nil
	}
	return nil, nil, fmt.Errorf("lifecycle: execution %s: unknown invocation outcome %d", state.ID, ev.Outcome)
}

func fired(state *messages.Execution, ev *messages.TimerFired) (*messages.Execution, []Effect, error) {
	if ev.Timer.Kind == messages.TimerTimeout {
		return timedOut(state, ev)
	}
	if state.Status.Terminal() {
		return nil, nil, nil
	}
	effects := []Effect{
		FireTimer{ExecutionID: state.ID, Timer: ev.Timer},
		Dispatch{ExecutionID: state.ID, Function: state.Function, TaskID: TimerTaskID(ev.Timer), Path: ev.Timer.Path, Input: state.Input,
			Trace: cmp.Or(ev.Timer.ResumeTrace, state.TraceParent)},
	}
	i := findTimer(state.Timers, ev.Timer)
	if i >= 0 && state.Timers[i].Fired {
		return nil, effects, nil
	}
	next := clone(state)
	if i >= 0 {
		next.Timers[i].Fired = true
	} else {
		next.Timers = append(next.Timers, messages.TimerState{TimerRequest: ev.Timer, Fired: true})
	}
	return next, effects, nil
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
