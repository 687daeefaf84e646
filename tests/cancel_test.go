package tests

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/client"
	"github.com/jetflow/jetflow/durable"
	"github.com/jetflow/jetflow/durabletest"
)

// stoppable is a handler whose Parallel branches block until their Context is cancelled, with a
// step before and after the batch. It records which branches started and which saw the
// cancellation, and whether the code after the batch ran.
type stoppable struct {
	mu        sync.Mutex
	started   map[int]bool
	cancelled map[int]bool
	after     atomic.Int32
}

func newStoppable() *stoppable {
	return &stoppable{started: map[int]bool{}, cancelled: map[int]bool{}}
}

func (s *stoppable) count(m map[int]bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(m)
}

func (s *stoppable) handler(n, mc int) func(durable.Context, string) (string, error) {
	return func(ctx durable.Context, _ string) (string, error) {
		if _, err := durable.Step(ctx, "before", func(durable.StepContext) (int, error) { return 1, nil }); err != nil {
			return "", err
		}
		branches := make([]durable.Branch[int], n)
		for i := range branches {
			branches[i] = durable.Branch[int]{Func: func(bctx durable.Context) (int, error) {
				return durable.Step(bctx, "block", func(sctx durable.StepContext) (int, error) {
					s.mu.Lock()
					s.started[i] = true
					s.mu.Unlock()
					<-sctx.Done()
					s.mu.Lock()
					s.cancelled[i] = true
					s.mu.Unlock()
					return 0, sctx.Err()
				})
			}}
		}
		if _, err := durable.Parallel(ctx, "blocked", branches, durable.WithMaxConcurrency(mc)); err != nil {
			return "", err
		}
		s.after.Add(1)
		return "not cancelled", nil
	}
}

// Cancel stops an execution whose branches run on two workers: every running branch's Context
// is cancelled, the execution ends CANCELLED, and nothing more is dispatched — neither the rest of
// the window nor the code after the batch.
func TestCancelStopsEveryBranchAcrossWorkers(t *testing.T) {
	env := durabletest.New(t, durabletest.WithWorkers(2))
	s := newStoppable()
	const n, mc = 40, 6
	durabletest.Register(env, "stoppable", s.handler(n, mc))
	ctx, cancel := context.WithTimeout(context.Background(), env.Timeout())
	defer cancel()
	cl := env.Client()
	id, err := cl.Start(ctx, "stoppable", "")
	require.NoError(t, err)
	eventually(t, func() bool { return s.count(s.started) == mc }, "the first window of branches to run")

	require.NoError(t, cl.Cancel(ctx, id, client.WithReason("operator said so")))
	err = cl.Result(ctx, id, nil)
	require.ErrorIs(t, err, client.ErrCancelled)
	ee := requireFailed(t, err, "Cancelled")
	require.Equal(t, "CANCELLED", ee.Status)
	require.Contains(t, ee.Message, "operator said so")
	eventually(t, func() bool { return s.count(s.cancelled) == mc }, "every running branch to see its Context cancelled")

	// A later execution on the same workers runs to its end: had anything of the cancelled one
	// been dispatched, it would have run by then.
	durabletest.Register(env, "barrier", func(ctx durable.Context, _ string) (string, error) {
		return durable.Step(ctx, "b", func(durable.StepContext) (string, error) { return "ok", nil })
	})
	got, err := durabletest.Run[string](env, "barrier", "")
	require.NoError(t, err)
	require.Equal(t, "ok", got)
	require.Equal(t, mc, s.count(s.started), "a branch was dispatched after the cancellation")
	require.Zero(t, s.after.Load(), "the code after the batch ran")

	d, err := cl.Describe(ctx, id)
	require.NoError(t, err)
	require.Equal(t, "CANCELLED", d.Status)

	// Cancelling again says it has ended; an unknown id is not found.
	require.ErrorIs(t, cl.Cancel(ctx, id), client.ErrAlreadyEnded)
	require.ErrorIs(t, cl.Cancel(ctx, "no-such-execution"), client.ErrNotFound)
}

// A handler cancelled while its own step runs (no batch) sees its Context cancelled too.
func TestCancelReachesTheHandlerItself(t *testing.T) {
	env := durabletest.New(t)
	entered := make(chan struct{})
	saw := make(chan error, 1)
	durabletest.Register(env, "long", func(ctx durable.Context, _ string) (string, error) {
		return durable.Step(ctx, "long", func(sctx durable.StepContext) (string, error) {
			close(entered)
			<-sctx.Done()
			saw <- sctx.Err()
			return "", sctx.Err()
		})
	})
	ctx, cancel := context.WithTimeout(context.Background(), env.Timeout())
	defer cancel()
	id, err := env.Client().Start(ctx, "long", "")
	require.NoError(t, err)
	<-entered
	require.NoError(t, env.Client().Cancel(ctx, id))
	require.ErrorIs(t, env.Client().Result(ctx, id, nil), client.ErrCancelled)
	select {
	case err := <-saw:
		require.ErrorIs(t, err, context.Canceled)
	case <-ctx.Done():
		t.Fatal("the step never saw its context cancelled")
	}
}

// A handler cancelled between durable operations, that goes on to a Parallel, gets an error from
// it: no batch is opened for a cancelled execution.
func TestParallelAfterCancellationReturnsAnError(t *testing.T) {
	env := durabletest.New(t)
	entered := make(chan struct{})
	got := make(chan error, 1)
	durabletest.Register(env, "stubborn", func(ctx durable.Context, _ string) (int, error) {
		close(entered)
		<-ctx.Done() // plain code, not a step: the handler sees the cancellation itself
		_, err := durable.Parallel(ctx, "after", []durable.Branch[int]{{Func: func(durable.Context) (int, error) { return 1, nil }}})
		got <- err
		return 0, err
	})
	ctx, cancel := context.WithTimeout(context.Background(), env.Timeout())
	defer cancel()
	id, err := env.Client().Start(ctx, "stubborn", "")
	require.NoError(t, err)
	<-entered
	require.NoError(t, env.Client().Cancel(ctx, id))
	require.ErrorIs(t, env.Client().Result(ctx, id, nil), client.ErrCancelled)
	select {
	case err := <-got:
		require.ErrorIs(t, err, context.Canceled)
	case <-ctx.Done():
		t.Fatal("the handler never reached its Parallel")
	}
}

// An execution that outlives its timeout ends TIMED_OUT: a durable wait does not save it, and a
// batch's running branches are cancelled as by Cancel.
func TestExecutionTimeout(t *testing.T) {
	env := durabletest.New(t, durabletest.WithWorkers(2))
	durabletest.Register(env, "sleepy", func(ctx durable.Context, _ string) (string, error) {
		if err := durable.Wait(ctx, "nap", time.Hour); err != nil {
			return "", err
		}
		return "woke", nil
	})
	s := newStoppable()
	const mc = 4
	durabletest.Register(env, "stuck", s.handler(10, mc))
	ctx, cancel := context.WithTimeout(context.Background(), env.Timeout())
	defer cancel()
	cl := env.Client()

	start := time.Now()
	id, err := cl.Start(ctx, "sleepy", "", client.WithTimeout(300*time.Millisecond))
	require.NoError(t, err)
	err = cl.Result(ctx, id, nil)
	require.ErrorIs(t, err, client.ErrTimedOut)
	require.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond)
	ee := requireFailed(t, err, "TimedOut")
	require.Equal(t, "TIMED_OUT", ee.Status)

	id, err = cl.Start(ctx, "stuck", "", client.WithTimeout(time.Second))
	require.NoError(t, err)
	require.ErrorIs(t, cl.Result(ctx, id, nil), client.ErrTimedOut)
	eventually(t, func() bool { return s.count(s.cancelled) == s.count(s.started) && s.count(s.started) == mc },
		"every running branch to see its Context cancelled")
	require.Zero(t, s.after.Load())

	// An execution that ends in time is not disturbed by its timeout.
	durabletest.Register(env, "quick", func(ctx durable.Context, _ string) (string, error) { return "done", nil })
	id, err = cl.Start(ctx, "quick", "", client.WithTimeout(time.Hour))
	require.NoError(t, err)
	var got string
	require.NoError(t, cl.Result(ctx, id, &got))
	require.Equal(t, "done", got)

	_, err = cl.Start(ctx, "quick", "", client.WithTimeout(-time.Second))
	require.Error(t, err)
}
