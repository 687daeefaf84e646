package lifecycle

import (
	"testing"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"github.com/jetflow/jetflow/messages"
)

const exec = "e1"

func running(timers ...messages.TimerState) *messages.Execution {
	return &messages.Execution{ID: exec, Function: "fn", Input: []byte{1}, Status: messages.ExecutionRunning,
		CreatedAt: 10, Timers: timers}
}

var (
	waitT  = messages.TimerRequest{OpID: "2", FireAt: 500, Kind: messages.TimerWait}
	retryT = messages.TimerRequest{OpID: "3", FireAt: 900, Kind: messages.TimerRetry, Path: []messages.BranchRef{{OpID: "1", Index: 4}}}
	par    = messages.ParallelRequest{OpID: "2", Config: messages.BatchConfig{N: 3, MaxConcurrency: 1}}
	errBad = &messages.ErrorInfo{Type: "errors.errorString", Message: "bad"}
)

var timeoutT = messages.TimerRequest{OpID: messages.TimeoutTimerOp, FireAt: 100, Kind: messages.TimerTimeout}

func withDeadline(x *messages.Execution, at int64) *messages.Execution {
	x.Deadline = at
	return x
}

func TestDecide(t *testing.T) {
	succeeded := running()
	succeeded.Status, succeeded.Result, succeeded.EndedAt = messages.ExecutionSucceeded, []byte{7}, 99
	failed := running()
	failed.Status, failed.Error, failed.EndedAt = messages.ExecutionFailed, errBad, 99
	cancelled := running()
	cancelled.Status, cancelled.Error, cancelled.EndedAt = messages.ExecutionCancelled, &messages.ErrorInfo{Type: "Cancelled", Message: "no"}, 50
	timedOut := withDeadline(running(), 100)
	timedOut.Status, timedOut.EndedAt = messages.ExecutionTimedOut, 101
	timedOut.Error = &messages.ErrorInfo{Type: "TimedOut", Message: "the execution did not end within its timeout of 90ns"}

	for _, tc := range []struct {
		name    string
		state   *messages.Execution
		event   messages.Message
		next    *messages.Execution
		effects []Effect
		err     error
	}{
		{
			name:    "start creates and dispatches the first invocation",
			event:   &messages.StartExecution{ExecutionID: exec, Function: "fn", Input: []byte{1}, RequestedAt: 10},
			next:    running(),
			effects: []Effect{Dispatch{exec, "fn", StartTaskID, nil, []byte{1}, ""}},
		},
		{
			name:    "duplicate start of a running execution re-dispatches its first invocation",
			state:   running(),
			event:   &messages.StartExecution{ExecutionID: exec, Function: "fn", Input: []byte{2}},
			effects: []Effect{Dispatch{exec, "fn", StartTaskID, nil, []byte{1}, ""}},
		},
		{
			name:  "duplicate start of a finished execution does nothing",
			state: succeeded,
			event: &messages.StartExecution{ExecutionID: exec, Function: "fn"},
		},
		{
			name:  "completion succeeds the execution",
			state: running(),
			event: &messages.InvocationEnded{ExecutionID: exec, TaskID: "start", Outcome: messages.OutcomeCompleted, Result: []byte{7}, EndedAt: 99},
			next:  succeeded,
		},
		{
			name:  "failure fails the execution with the handler's error",
			state: running(),
			event: &messages.InvocationEnded{ExecutionID: exec, TaskID: "start", Outcome: messages.OutcomeFailed, Error: errBad, EndedAt: 99},
			next:  failed,
		},
		{
			name:  "a finished execution never changes",
			state: succeeded,
			event: &messages.InvocationEnded{ExecutionID: exec, TaskID: "start", Outcome: messages.OutcomeFailed, Error: errBad},
		},
		{
			name:    "suspension schedules its timers",
			state:   running(),
			event:   &messages.InvocationEnded{ExecutionID: exec, TaskID: "start", Outcome: messages.OutcomeSuspended, Timers: []messages.TimerRequest{waitT, retryT}},
			next:    running(messages.TimerState{TimerRequest: waitT}, messages.TimerState{TimerRequest: retryT}),
			effects: []Effect{ScheduleTimer{exec, waitT}, ScheduleTimer{exec, retryT}},
		},
		{
			name:    "suspension on a pending timer schedules it again (deduplicated downstream)",
			state:   running(messages.TimerState{TimerRequest: waitT}),
			event:   &messages.InvocationEnded{ExecutionID: exec, TaskID: "start", Outcome: messages.OutcomeSuspended, Timers: []messages.TimerRequest{waitT}},
			effects: []Effect{ScheduleTimer{exec, waitT}},
		},
		{
			name:    "a suspension on a parallel opens its batch",
			state:   running(),
			event:   &messages.InvocationEnded{ExecutionID: exec, TaskID: "start", Outcome: messages.OutcomeSuspended, Parallels: []messages.ParallelRequest{par}},
			effects: []Effect{OpenBatch{exec, "fn", par, []byte{1}}},
		},
		{
			name:  "a branch's completion is not the execution's",
			state: running(),
			event: &messages.InvocationEnded{ExecutionID: exec, TaskID: "b", Path: retryT.Path, Outcome: messages.OutcomeCompleted, Result: []byte{1}},
		},
		{
			name:  "a branch's fatal failure fails the execution",
			state: running(),
			event: &messages.InvocationEnded{ExecutionID: exec, TaskID: "b", Path: retryT.Path, Outcome: messages.OutcomeFailed, Error: errBad, EndedAt: 99},
			next:  failed,
		},
		{
			name:    "a branch's timer replays the branch",
			state:   running(messages.TimerState{TimerRequest: retryT}),
			event:   &messages.TimerFired{ExecutionID: exec, Timer: retryT},
			next:    running(messages.TimerState{TimerRequest: retryT, Fired: true}),
			effects: []Effect{FireTimer{exec, retryT}, Dispatch{exec, "fn", TimerTaskID(retryT), retryT.Path, []byte{1}, ""}},
		},
		{
			name:  "a stale suspension on a fired timer does nothing",
			state: running(messages.TimerState{TimerRequest: waitT, Fired: true}),
			event: &messages.InvocationEnded{ExecutionID: exec, TaskID: "start", Outcome: messages.OutcomeSuspended, Timers: []messages.TimerRequest{waitT}},
		},
		{
			name:    "a due timer marks its operation and dispatches a replay",
			state:   running(messages.TimerState{TimerRequest: waitT}),
			event:   &messages.TimerFired{ExecutionID: exec, Timer: waitT},
			next:    running(messages.TimerState{TimerRequest: waitT, Fired: true}),
			effects: []Effect{FireTimer{exec, waitT}, Dispatch{exec, "fn", TimerTaskID(waitT), nil, []byte{1}, ""}},
		},
		{
			name:    "a timer fired twice repeats the same effects",
			state:   running(messages.TimerState{TimerRequest: waitT, Fired: true}),
			event:   &messages.TimerFired{ExecutionID: exec, Timer: waitT},
			effects: []Effect{FireTimer{exec, waitT}, Dispatch{exec, "fn", TimerTaskID(waitT), nil, []byte{1}, ""}},
		},
		{
			name:  "a timer of a finished execution does nothing",
			state: failed,
			event: &messages.TimerFired{ExecutionID: exec, Timer: waitT},
		},
		{
			name:    "a start with a timeout schedules the timeout",
			event:   &messages.StartExecution{ExecutionID: exec, Function: "fn", Input: []byte{1}, RequestedAt: 10, Timeout: 90},
			next:    withDeadline(running(), 100),
			effects: []Effect{Dispatch{exec, "fn", StartTaskID, nil, []byte{1}, ""}, ScheduleTimer{exec, timeoutT}},
		},
		{
			name:    "a duplicate start schedules the timeout again",
			state:   withDeadline(running(), 100),
			event:   &messages.StartExecution{ExecutionID: exec, Function: "fn"},
			effects: []Effect{Dispatch{exec, "fn", StartTaskID, nil, []byte{1}, ""}, ScheduleTimer{exec, timeoutT}},
		},
		{
			name:    "cancel stops a running execution",
			state:   running(messages.TimerState{TimerRequest: waitT}),
			event:   &messages.CancelExecution{ExecutionID: exec, Reason: "no", RequestedAt: 50},
			next:    cancelled,
			effects: []Effect{StopExecution{exec}},
		},
		{
			name:    "cancel of a cancelled execution repeats the stop",
			state:   cancelled,
			event:   &messages.CancelExecution{ExecutionID: exec, RequestedAt: 60},
			effects: []Effect{StopExecution{exec}},
		},
		{
			name:  "cancel of a finished execution does nothing",
			state: succeeded,
			event: &messages.CancelExecution{ExecutionID: exec},
		},
		{
			name:  "cancel of an unknown execution is an error",
			event: &messages.CancelExecution{ExecutionID: exec},
			err:   ErrUnknownExecution,
		},
		{
			name:    "the timeout stops a running execution",
			state:   withDeadline(running(), 100),
			event:   &messages.TimerFired{ExecutionID: exec, Timer: timeoutT, FiredAt: 101},
			next:    timedOut,
			effects: []Effect{StopExecution{exec}},
		},
		{
			name:  "the timeout of a finished execution does nothing",
			state: succeeded,
			event: &messages.TimerFired{ExecutionID: exec, Timer: timeoutT, FiredAt: 101},
		},
		{
			name:  "an ending after a cancellation changes nothing",
			state: cancelled,
			event: &messages.InvocationEnded{ExecutionID: exec, TaskID: "start", Outcome: messages.OutcomeCompleted, Result: []byte{7}},
		},
		{
			name:  "an ending for an unknown execution is an error",
			event: &messages.InvocationEnded{ExecutionID: exec, TaskID: "start", Outcome: messages.OutcomeCompleted},
			err:   ErrUnknownExecution,
		},
		{
			name:  "a timer for an unknown execution is an error",
			event: &messages.TimerFired{ExecutionID: exec, Timer: waitT},
			err:   ErrUnknownExecution,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			next, effects, err := Decide(tc.state, tc.event)
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.next, next)
			require.Equal(t, tc.effects, effects)
		})
	}
}

func TestDecideRejectsNonEvents(t *testing.T) {
	_, _, err := Decide(running(), &messages.RunTask{})
	require.Error(t, err)
}

// Every event applied twice in a row — a redelivery after a crash between the state write and
// the ack — yields no further state change and the same effects again; and a finished execution
// stays finished whatever arrives.
func TestDecideIsIdempotent(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		timers := []messages.TimerRequest{waitT, retryT, {OpID: "4", FireAt: 1000, Kind: messages.TimerWait}}
		genTimers := rapid.SliceOfN(rapid.SampledFrom(timers), 1, 3)
		genEvent := rapid.OneOf(
			rapid.Just[messages.Message](&messages.StartExecution{ExecutionID: exec, Function: "fn"}),
			rapid.Custom(func(t *rapid.T) messages.Message {
				o := rapid.SampledFrom([]messages.Outcome{messages.OutcomeCompleted, messages.OutcomeFailed, messages.OutcomeSuspended}).Draw(t, "outcome")
				ev := &messages.InvocationEnded{ExecutionID: exec, TaskID: "x", Outcome: o}
				if o == messages.OutcomeSuspended {
					ev.Timers = genTimers.Draw(t, "timers")
				}
				if o == messages.OutcomeFailed {
					ev.Error = errBad
				}
				return ev
			}),
			rapid.Custom(func(t *rapid.T) messages.Message {
				return &messages.TimerFired{ExecutionID: exec, Timer: rapid.SampledFrom(timers).Draw(t, "timer")}
			}),
			rapid.Just[messages.Message](&messages.CancelExecution{ExecutionID: exec, RequestedAt: 5}),
			rapid.Just[messages.Message](&messages.TimerFired{ExecutionID: exec, Timer: timeoutT, FiredAt: 7}),
		)
		var state *messages.Execution
		events := append([]messages.Message{&messages.StartExecution{ExecutionID: exec, Function: "fn"}},
			rapid.SliceOfN(genEvent, 0, 20).Draw(t, "events")...)
		for _, ev := range events {
			next, effects, err := Decide(state, ev)
			require.NoError(t, err)
			if state != nil && state.Status.Terminal() {
				require.Nil(t, next, "a finished execution changed")
				for _, eff := range effects { // only a repeated stop of a stopped execution
					require.Equal(t, StopExecution{exec}, eff)
				}
			}
			if next != nil {
				state = next
			}
			again, effects2, err := Decide(state, ev)
			require.NoError(t, err)
			require.Nil(t, again, "applying %T twice changed the state again", ev)
			require.Equal(t, effects, effects2, "applying %T twice gave other effects", ev)
		}
	})
}

func BenchmarkDecide(b *testing.B) {
	state := running(messages.TimerState{TimerRequest: waitT})
	ev := &messages.InvocationEnded{ExecutionID: exec, TaskID: "start", Outcome: messages.OutcomeSuspended,
		Parallels: []messages.ParallelRequest{par}}
	for b.Loop() {
		if _, _, err := Decide(state, ev); err != nil {
			b.Fatal(err)
		}
	}
}
