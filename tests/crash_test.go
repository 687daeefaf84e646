package tests

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/durable"
	"github.com/jetflow/jetflow/durabletest"
)

// blocker lets a test hold a step body on its first run until the test has done its damage.
type blocker struct {
	entered chan struct{}
	release chan struct{}
	first   atomic.Bool
}

func newBlocker() *blocker {
	return &blocker{entered: make(chan struct{}), release: make(chan struct{})}
}

// hold blocks the first caller until ctx ends (the worker running it is killed) or the test
// releases it; later callers pass straight through.
func (b *blocker) hold(ctx context.Context) error {
	if b.first.CompareAndSwap(false, true) {
		close(b.entered)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-b.release:
		}
	}
	return nil
}

func (b *blocker) waitEntered(t *testing.T) {
	t.Helper()
	select {
	case <-b.entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the step never started")
	}
}

// A worker dies after step 1 of 3 checkpointed; another worker finishes the execution, and step
// 1's body ran exactly once.
func TestWorkerCrashAfterACheckpoint(t *testing.T) {
	env := durabletest.New(t, durabletest.WithWorkers(1))
	var step1, step2, step3 atomic.Int32
	b := newBlocker()
	durabletest.Register(env, "three-steps", func(ctx durable.Context, _ string) ([]string, error) {
		a, err := durable.Step(ctx, "one", func(durable.StepContext) (string, error) { step1.Add(1); return "a", nil })
		if err != nil {
			return nil, err
		}
		bb, err := durable.Step(ctx, "two", func(sc durable.StepContext) (string, error) {
			step2.Add(1)
			return "b", b.hold(sc)
		})
		if err != nil {
			return nil, err
		}
		c, err := durable.Step(ctx, "three", func(durable.StepContext) (string, error) { step3.Add(1); return "c", nil })
		return []string{a, bb, c}, err
	})
	ctx := context.Background()
	id, err := env.Client().Start(ctx, "three-steps", "")
	require.NoError(t, err)
	b.waitEntered(t)
	env.KillWorker(0)
	env.AddWorker()

	var got []string
	require.NoError(t, waitResult(t, env, id, &got))
	require.Equal(t, []string{"a", "b", "c"}, got)
	require.Equal(t, int32(1), step1.Load(), "a checkpointed step ran again")
	require.Equal(t, int32(2), step2.Load(), "the interrupted step runs again (at least once)")
	require.Equal(t, int32(1), step3.Load())
}

// With at-most-once semantics, an attempt interrupted by a crash is not run again: it counts as
// a failed attempt and goes through the retry policy.
func TestAtMostOnceInterruptedAttemptCountsAsFailed(t *testing.T) {
	for _, tc := range []struct {
		name        string
		maxAttempts int
		wantErr     bool
		wantBodies  int32
	}{
		{"retried", 2, false, 2},
		{"no retries left", 1, true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := durabletest.New(t, durabletest.WithWorkers(1))
			var bodies atomic.Int32
			b := newBlocker()
			durabletest.Register(env, "pay", func(ctx durable.Context, _ string) (int, error) {
				return durable.Step(ctx, "charge", func(sc durable.StepContext) (int, error) {
					bodies.Add(1)
					return sc.Attempt(), b.hold(sc)
				}, durable.WithSemantics(durable.AtMostOncePerRetry),
					durable.WithRetry(durable.RetryPolicy{MaxAttempts: tc.maxAttempts, InitialInterval: 10 * time.Millisecond}))
			})
			id, err := env.Client().Start(context.Background(), "pay", "")
			require.NoError(t, err)
			b.waitEntered(t)
			env.KillWorker(0)
			env.AddWorker()

			var attempt int
			err = waitResult(t, env, id, &attempt)
			if tc.wantErr {
				_ = requireFailed(t, err, "StepInterrupted")
			} else {
				require.NoError(t, err)
				require.Equal(t, 2, attempt)
			}
			require.Equal(t, tc.wantBodies, bodies.Load())
		})
	}
}

// The NATS server restarts (same store) while an execution waits; it completes.
func TestServerRestartMidExecution(t *testing.T) {
	env := durabletest.New(t)
	var first atomic.Int32
	b := newBlocker()
	durabletest.Register(env, "survives", func(ctx durable.Context, _ string) (string, error) {
		a, err := durable.Step(ctx, "before", func(durable.StepContext) (string, error) { first.Add(1); return "before", nil })
		if err != nil {
			return "", err
		}
		// The step in flight while the server restarts checkpoints once it is back.
		c, err := durable.Step(ctx, "during", func(sc durable.StepContext) (string, error) {
			return "during", b.hold(sc)
		})
		if err != nil {
			return "", err
		}
		if err := durable.Wait(ctx, "after-restart", 50*time.Millisecond); err != nil {
			return "", err
		}
		return a + "+" + c, nil
	})
	id, err := env.Client().Start(context.Background(), "survives", "")
	require.NoError(t, err)
	b.waitEntered(t)
	env.RestartServer()
	close(b.release)
	var got string
	require.NoError(t, waitResult(t, env, id, &got))
	require.Equal(t, "before+during", got)
	require.Equal(t, int32(1), first.Load())
}

// A wait survives a restart of every process: server, coordinator and workers.
func TestWaitSurvivesRestartOfEverything(t *testing.T) {
	env := durabletest.New(t, durabletest.WithWorkers(1))
	var after atomic.Int32
	durabletest.Register(env, "sleeper", func(ctx durable.Context, _ string) (string, error) {
		if err := durable.Wait(ctx, "nap", 1500*time.Millisecond); err != nil {
			return "", err
		}
		return durable.Step(ctx, "wake", func(durable.StepContext) (string, error) { after.Add(1); return "awake", nil })
	})
	ctx := context.Background()
	id, err := env.Client().Start(ctx, "sleeper", "")
	require.NoError(t, err)
	eventually(t, func() bool {
		x, err := env.Client().Describe(ctx, id)
		return err == nil && len(x.Operations) == 1 && x.Operations[0].Status == "PENDING"
	}, "the wait to be recorded")

	env.KillWorker(0)
	env.KillCoordinator(0)
	env.RestartServer()
	env.StartCoordinator(0)
	env.StartWorker(0)

	var got string
	require.NoError(t, waitResult(t, env, id, &got))
	require.Equal(t, "awake", got)
	require.Equal(t, int32(1), after.Load())
}

func waitResult(t *testing.T, env *durabletest.Env, id string, out any) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), env.Timeout())
	defer cancel()
	return env.Client().Result(ctx, id, out)
}

// eventually polls cond until it holds or 30 seconds pass.
func eventually(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

// A step that takes longer than the ack wait is not handed to another worker: the worker's
// heartbeats keep its task.
func TestLongStepKeepsItsTask(t *testing.T) {
	env := durabletest.New(t, durabletest.WithAckWait(500*time.Millisecond))
	var bodies atomic.Int32
	durabletest.Register(env, "slow", func(ctx durable.Context, _ string) (int, error) {
		return durable.Step(ctx, "slow", func(sc durable.StepContext) (int, error) {
			bodies.Add(1)
			t := time.NewTimer(2 * time.Second)
			defer t.Stop()
			select {
			case <-t.C:
			case <-sc.Done():
				return 0, sc.Err()
			}
			return 1, nil
		})
	})
	got, err := durabletest.Run[int](env, "slow", "")
	require.NoError(t, err)
	require.Equal(t, 1, got)
	require.Equal(t, int32(1), bodies.Load(), "the task was redelivered while its worker still held it")
}
