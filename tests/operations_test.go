package tests

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/client"
	"github.com/jetflow/jetflow/durable"
	"github.com/jetflow/jetflow/durabletest"
)

var fastRetry = durable.RetryPolicy{MaxAttempts: 3, InitialInterval: 10 * time.Millisecond, MaxInterval: 20 * time.Millisecond}

// A step that fails after its retries gives a *StepError with the body's type and message, and
// the handler sees the same error again after a wait forces a replay.
func TestStepErrorIsTheSameLiveAndOnReplay(t *testing.T) {
	env := durabletest.New(t)
	var attempts atomic.Int32
	seen := make(chan string, 2)
	durabletest.Register(env, "declined", func(ctx durable.Context, _ string) (string, error) {
		_, err := durable.Step(ctx, "charge", func(durable.StepContext) (int, error) {
			attempts.Add(1)
			return 0, &declinedError{code: 51}
		}, durable.WithRetry(fastRetry))
		var se *durable.StepError
		if !errors.As(err, &se) {
			return "", fmt.Errorf("want a *StepError, got %T %v", err, err)
		}
		seen <- se.ErrorType + "|" + se.Message
		if err := durable.Wait(ctx, "cool-off", 10*time.Millisecond); err != nil {
			return "", err
		}
		return se.ErrorType + "|" + se.Message, nil
	})
	got, err := durabletest.Run[string](env, "declined", "")
	require.NoError(t, err)
	require.Equal(t, "tests.declinedError|card declined (code 51)", got)
	require.Equal(t, int32(3), attempts.Load(), "three attempts under the policy")
	require.Equal(t, got, <-seen)
	require.Equal(t, got, <-seen, "the replayed error differs from the live one")
}

type declinedError struct{ code int }

func (e *declinedError) Error() string { return fmt.Sprintf("card declined (code %d)", e.code) }

func TestRetryIfStopsRetriesOfPermanentErrors(t *testing.T) {
	env := durabletest.New(t)
	var attempts atomic.Int32
	policy := fastRetry
	policy.MaxAttempts = 5
	policy.RetryIf = func(err error) bool { var d *declinedError; return !errors.As(err, &d) }
	durabletest.Register(env, "permanent", func(ctx durable.Context, _ string) (int, error) {
		return durable.Step(ctx, "charge", func(durable.StepContext) (int, error) {
			attempts.Add(1)
			return 0, &declinedError{code: 5}
		}, durable.WithRetry(policy))
	})
	_, err := durabletest.Run[int](env, "permanent", "")
	ee := requireFailed(t, err, "tests.declinedError")
	require.Equal(t, "card declined (code 5)", ee.Message)
	require.Equal(t, int32(1), attempts.Load())
}

func TestStepPanicIsAFailedAttempt(t *testing.T) {
	env := durabletest.New(t)
	durabletest.Register(env, "panicky-step", func(ctx durable.Context, _ string) (int, error) {
		return durable.Step(ctx, "boom", func(durable.StepContext) (int, error) {
			panic("nil map")
		}, durable.WithRetry(durable.RetryPolicy{MaxAttempts: 1}))
	})
	_, err := durabletest.Run[int](env, "panicky-step", "")
	ee := requireFailed(t, err, "Panic")
	require.Contains(t, ee.Message, "nil map")
}

func TestHandlerPanicFailsOnlyItsExecution(t *testing.T) {
	env := durabletest.New(t, durabletest.WithWorkers(1))
	durabletest.Register(env, "panics", func(ctx durable.Context, _ string) (string, error) {
		var m map[string]int
		m["x"] = 1 //nolint:staticcheck // the panic is what this test is about
		return "unreachable", nil
	})
	durabletest.Register(env, "fine", func(ctx durable.Context, s string) (string, error) {
		return durable.Step(ctx, "echo", func(durable.StepContext) (string, error) { return s, nil })
	})
	_, err := durabletest.Run[string](env, "panics", "")
	ee := requireFailed(t, err, "Panic")
	require.Contains(t, ee.Message, "assignment to entry in nil map")
	got, err := durabletest.Run[string](env, "fine", "still serving")
	require.NoError(t, err)
	require.Equal(t, "still serving", got)
}

func TestChildContexts(t *testing.T) {
	env := durabletest.New(t)
	var inner atomic.Int32
	durabletest.Register(env, "children", func(ctx durable.Context, n int) ([]int, error) {
		var out []int
		for i := range n {
			v, err := durable.RunInChildContext(ctx, fmt.Sprintf("child-%d", i), func(c durable.Context) (int, error) {
				a, err := durable.Step(c, "a", func(durable.StepContext) (int, error) { inner.Add(1); return i * 10, nil })
				if err != nil {
					return 0, err
				}
				return durable.RunInChildContext(c, "grandchild", func(g durable.Context) (int, error) {
					return durable.Step(g, "b", func(durable.StepContext) (int, error) { inner.Add(1); return a + 1, nil })
				})
			})
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		// A wait forces a replay: finished children must not run again.
		if err := durable.Wait(ctx, "settle", 10*time.Millisecond); err != nil {
			return nil, err
		}
		return out, nil
	})
	got, err := durabletest.Run[[]int](env, "children", 3)
	require.NoError(t, err)
	require.Equal(t, []int{1, 11, 21}, got)
	require.Equal(t, int32(6), inner.Load(), "a step in a finished child ran again on replay")
}

func TestChildContextFailure(t *testing.T) {
	env := durabletest.New(t)
	durabletest.Register(env, "child-fails", func(ctx durable.Context, _ string) (string, error) {
		_, err := durable.RunInChildContext(ctx, "validate", func(c durable.Context) (int, error) {
			return 0, errors.New("address missing")
		})
		var ce *durable.ChildContextError
		if !errors.As(err, &ce) {
			return "", fmt.Errorf("want a *ChildContextError, got %T", err)
		}
		_, err = durable.RunInChildContext(ctx, "charge", func(c durable.Context) (int, error) {
			return durable.Step(c, "card", func(durable.StepContext) (int, error) {
				return 0, &declinedError{code: 1}
			}, durable.WithRetry(durable.RetryPolicy{MaxAttempts: 1}))
		})
		var se *durable.StepError
		if !errors.As(err, &se) {
			return "", fmt.Errorf("want the step's *StepError through the child, got %T", err)
		}
		return ce.Message + " / " + se.ErrorType, nil
	})
	got, err := durabletest.Run[string](env, "child-fails", "")
	require.NoError(t, err)
	require.Equal(t, "address missing / tests.declinedError", got)
}

// A wait suspends the handler: it is invoked again when the timer fires, and the wait lasts at
// least its duration.
func TestWaitSuspendsAndResumes(t *testing.T) {
	env := durabletest.New(t)
	var invocations, before, after atomic.Int32
	durabletest.Register(env, "waits", func(ctx durable.Context, d time.Duration) (time.Duration, error) {
		invocations.Add(1)
		start, err := durable.Step(ctx, "start", func(durable.StepContext) (time.Time, error) { before.Add(1); return time.Now(), nil })
		if err != nil {
			return 0, err
		}
		if err := durable.Wait(ctx, "pause", d); err != nil {
			return 0, err
		}
		return durable.Step(ctx, "end", func(durable.StepContext) (time.Duration, error) {
			after.Add(1)
			return time.Since(start), nil
		})
	})
	elapsed, err := durabletest.Run[time.Duration](env, "waits", 300*time.Millisecond)
	require.NoError(t, err)
	require.GreaterOrEqual(t, elapsed, 300*time.Millisecond)
	require.Equal(t, int32(2), invocations.Load(), "the handler should run once before the wait and once after")
	require.Equal(t, int32(1), before.Load())
	require.Equal(t, int32(1), after.Load())
}

func TestWaitRejectsNonPositiveDuration(t *testing.T) {
	env := durabletest.New(t)
	durabletest.Register(env, "bad-wait", func(ctx durable.Context, _ string) (string, error) {
		err := durable.Wait(ctx, "never", 0)
		if err == nil {
			return "", errors.New("no error for a zero wait")
		}
		return err.Error(), nil
	})
	got, err := durabletest.Run[string](env, "bad-wait", "")
	require.NoError(t, err)
	require.Contains(t, got, "duration must be positive")
}

func TestStartIsIdempotentByName(t *testing.T) {
	env := durabletest.New(t)
	var runs atomic.Int32
	durabletest.Register(env, "once", func(ctx durable.Context, in string) (string, error) {
		return durable.Step(ctx, "work", func(durable.StepContext) (string, error) { runs.Add(1); return "did " + in, nil })
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := env.Client()
	id1, err := cl.Start(ctx, "once", "first", client.WithExecutionName("invoice-42"))
	require.NoError(t, err)
	id2, err := cl.Start(ctx, "once", "second", client.WithExecutionName("invoice-42"))
	require.NoError(t, err)
	require.Equal(t, "invoice-42", id1)
	require.Equal(t, id1, id2)
	var got string
	require.NoError(t, cl.Result(ctx, id1, &got))
	require.Equal(t, "did first", got)
	// A third start after the end returns the same finished execution.
	id3, err := cl.Start(ctx, "once", "third", client.WithExecutionName("invoice-42"))
	require.NoError(t, err)
	require.NoError(t, cl.Result(ctx, id3, &got))
	require.Equal(t, "did first", got)
	require.Equal(t, int32(1), runs.Load())
}

// A handler whose operations change between runs fails with NonDeterminismError instead of
// adopting the wrong checkpoint.
func TestNonDeterminismIsDetected(t *testing.T) {
	env := durabletest.New(t)
	var invocation atomic.Int32
	durabletest.Register(env, "drifts", func(ctx durable.Context, _ string) (string, error) {
		n := invocation.Add(1)
		if _, err := durable.Step(ctx, fmt.Sprintf("step-v%d", n), func(durable.StepContext) (int, error) { return 1, nil }); err != nil {
			var nd *durable.NonDeterminismError
			if !errors.As(err, &nd) {
				return "", fmt.Errorf("want NonDeterminismError, got %T", err)
			}
			return "swallowed: the execution must fail anyway", nil
		}
		if err := durable.Wait(ctx, "pause", 10*time.Millisecond); err != nil {
			return "", err
		}
		return "finished", nil
	})
	_, err := durabletest.Run[string](env, "drifts", "")
	ee := requireFailed(t, err, "NonDeterminismError")
	require.Contains(t, ee.Message, `checkpoint has STEP "step-v1", handler now calls STEP "step-v2"`)
}

func TestNonDeterministicKindIsDetected(t *testing.T) {
	env := durabletest.New(t)
	var invocation atomic.Int32
	durabletest.Register(env, "kind-drifts", func(ctx durable.Context, _ string) (string, error) {
		if invocation.Add(1) == 1 {
			if err := durable.Wait(ctx, "op", 10*time.Millisecond); err != nil {
				return "", err
			}
		} else {
			if _, err := durable.Step(ctx, "op", func(durable.StepContext) (int, error) { return 1, nil }); err != nil {
				return "", err
			}
		}
		return "finished", nil
	})
	_, err := durabletest.Run[string](env, "kind-drifts", "")
	_ = requireFailed(t, err, "NonDeterminismError")
}

func TestBadInputFailsTheExecutionClearly(t *testing.T) {
	env := durabletest.New(t)
	durabletest.Register(env, "typed", func(ctx durable.Context, o Order) (int, error) { return o.Items, nil })
	_, err := durabletest.Run[int](env, "typed", []string{"not", "an", "order"})
	ee := requireFailed(t, err, "InputError")
	require.Contains(t, ee.Message, "input of typed does not decode")
}

func TestUnregisteredFunctionWaitsForAWorker(t *testing.T) {
	env := durabletest.New(t)
	cl := env.Client()
	ctx := context.Background()
	id, err := cl.Start(ctx, "later", "queued")
	require.NoError(t, err)

	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	err = cl.Result(short, id, nil)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Contains(t, err.Error(), `no worker has registered function "later"`)

	durabletest.Register(env, "later", func(ctx durable.Context, s string) (string, error) { return s + " then ran", nil })
	long, cancel2 := context.WithTimeout(ctx, 30*time.Second)
	defer cancel2()
	var got string
	require.NoError(t, cl.Result(long, id, &got))
	require.Equal(t, "queued then ran", got)
}

func TestStartRejectsBadInput(t *testing.T) {
	env := durabletest.New(t, durabletest.WithWorkers(0))
	cl := env.Client()
	ctx := context.Background()
	_, err := cl.Start(ctx, "bad.name", nil)
	require.ErrorContains(t, err, "invalid name: function name")
	_, err = cl.Start(ctx, "ok", nil, client.WithExecutionName("has space"))
	require.ErrorContains(t, err, "invalid name: execution id")
	_, err = cl.Start(ctx, "ok", make(chan int))
	require.ErrorContains(t, err, "encode input")
	_, err = cl.Start(ctx, "ok", make([]byte, 2<<20))
	require.ErrorIs(t, err, client.ErrInputTooLarge)
}

func TestDescribeShowsTheOperationTree(t *testing.T) {
	env := durabletest.New(t)
	durabletest.Register(env, "tree", func(ctx durable.Context, _ string) (int, error) {
		if _, err := durable.Step(ctx, "first", func(durable.StepContext) (int, error) { return 1, nil }); err != nil {
			return 0, err
		}
		return durable.RunInChildContext(ctx, "sub", func(c durable.Context) (int, error) {
			return durable.Step(c, "inner", func(durable.StepContext) (int, error) { return 2, nil })
		})
	})
	ctx := context.Background()
	id, err := env.Client().Start(ctx, "tree", "")
	require.NoError(t, err)
	require.NoError(t, env.Client().Result(ctx, id, nil))
	x, err := env.Client().Describe(ctx, id)
	require.NoError(t, err)
	require.Equal(t, "SUCCEEDED", x.Status)
	require.Len(t, x.Operations, 2)
	require.Equal(t, "first", x.Operations[0].Name)
	require.Equal(t, "STEP", x.Operations[0].Kind)
	sub := x.Operations[1]
	require.Equal(t, "CONTEXT", sub.Kind)
	require.Equal(t, "SUCCEEDED", sub.Status)
	require.Len(t, sub.Children, 1)
	require.Equal(t, "inner", sub.Children[0].Name)
	require.Equal(t, "2-1", sub.Children[0].ID)

	_, err = env.Client().Describe(ctx, "no-such-execution")
	require.ErrorIs(t, err, client.ErrNotFound)
}

func TestLoggerIsQuietWhileReplaying(t *testing.T) {
	env := durabletest.New(t)
	replaying := make(chan bool, 4)
	durabletest.Register(env, "replays", func(ctx durable.Context, _ string) (string, error) {
		if _, err := durable.Step(ctx, "a", func(durable.StepContext) (int, error) { return 1, nil }); err != nil {
			return "", err
		}
		replaying <- ctx.IsReplaying()
		if err := durable.Wait(ctx, "w", 10*time.Millisecond); err != nil {
			return "", err
		}
		_, err := durable.Step(ctx, "b", func(durable.StepContext) (int, error) { return 1, nil })
		replaying <- ctx.IsReplaying()
		return "", err
	})
	_, err := durabletest.Run[string](env, "replays", "")
	require.NoError(t, err)
	require.False(t, <-replaying, "first run, after a new step")
	require.True(t, <-replaying, "second run, passing the checkpointed step")
	require.False(t, <-replaying, "second run, after the new step")
}
