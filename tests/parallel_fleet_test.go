package tests

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/durable"
	"github.com/jetflow/jetflow/durabletest"
)

// gauge counts branches running at once and remembers the most.
type gauge struct {
	mu        sync.Mutex
	now, most int
}

func (g *gauge) enter() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.now++
	g.most = max(g.most, g.now)
}

func (g *gauge) leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.now--
}

func (g *gauge) max() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.most
}

// hold keeps a branch busy for d, or until it is cancelled.
func hold(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// With MaxConcurrency k and three workers, at most k branches run at once across the fleet — and
// the window is used: exactly k at the busiest moment.
func TestWindowHoldsAcrossTheFleet(t *testing.T) {
	env := durabletest.New(t, durabletest.WithWorkers(3))
	const n, k = 40, 4
	var g gauge
	durabletest.Register(env, "windowed", func(ctx durable.Context, _ string) (int, error) {
		branches := make([]durable.Branch[int], n)
		for i := range branches {
			branches[i] = durable.Branch[int]{Func: func(ctx durable.Context) (int, error) {
				return durable.Step(ctx, "work", func(sc durable.StepContext) (int, error) {
					g.enter()
					defer g.leave()
					hold(sc, 15*time.Millisecond)
					return i, nil
				})
			}}
		}
		res, err := durable.Parallel(ctx, "windowed", branches, durable.WithMaxConcurrency(k))
		if err != nil {
			return 0, err
		}
		return res.SuccessCount(), nil
	})
	got, err := durabletest.Run[int](env, "windowed", "")
	require.NoError(t, err)
	require.Equal(t, n, got)
	require.Equal(t, k, g.max(), "the most branches in flight at once")
}

// When a batch completes early, the branches still running are cancelled wherever they run, and
// what they return afterwards is not counted; the parent goes on without waiting for them.
func TestAbandonedBranchesAreCancelledAndNotCounted(t *testing.T) {
	env := durabletest.New(t, durabletest.WithWorkers(3))
	cancelled := make(chan int, 2)
	release := make(chan struct{})
	slowRunning := make(chan struct{}, 2)
	var lateReturns atomic.Int32
	durabletest.Register(env, "race", func(ctx durable.Context, _ string) (string, error) {
		slow := func(i int) durable.Branch[string] {
			return durable.Branch[string]{Func: func(bctx durable.Context) (string, error) {
				slowRunning <- struct{}{}
				select {
				case <-bctx.Done():
					cancelled <- i
				case <-release:
				}
				lateReturns.Add(1)
				return fmt.Sprintf("late %d", i), nil
			}}
		}
		res, err := durable.Parallel(ctx, "race", []durable.Branch[string]{
			slow(0),
			{Func: func(bctx durable.Context) (string, error) {
				return durable.Step(bctx, "fast", func(durable.StepContext) (string, error) {
					// The test is about abandoning branches that run: let both start first (a
					// branch not yet started when the batch completes is simply never run).
					for range 2 {
						<-slowRunning
					}
					return "fast", nil
				})
			}},
			slow(2),
		}, durable.WithCompletion(durable.FirstSuccessful()))
		if err != nil {
			return "", err
		}
		// A durable wait after the batch suspends normally although two branches were abandoned,
		// and the replay after it sees the same result.
		if err := durable.Wait(ctx, "after", 20*time.Millisecond); err != nil {
			return "", err
		}
		b, err := json.Marshal(res)
		return string(b), err
	})
	got, err := durabletest.Run[string](env, "race", "")
	require.NoError(t, err)
	require.JSONEq(t, `{"all":[
		{"index":0,"name":"parallel-branch-0","status":"STARTED"},
		{"index":1,"name":"parallel-branch-1","status":"SUCCEEDED","result":"fast"},
		{"index":2,"name":"parallel-branch-2","status":"STARTED"}],
		"completionReason":"MIN_SUCCESSFUL_REACHED","status":"SUCCEEDED","successCount":1,"failureCount":0,"startedCount":2,"totalCount":3}`, got)
	seen := map[int]bool{}
	for range 2 {
		select {
		case i := <-cancelled:
			seen[i] = true
		case <-time.After(30 * time.Second):
			t.Fatal("an abandoned branch never saw its context cancelled")
		}
	}
	require.Equal(t, map[int]bool{0: true, 2: true}, seen)
	close(release)
	require.Equal(t, int32(2), lateReturns.Load())
}

// An abandoned step that never finishes does not keep the parent from finishing: nothing waits
// for it (the reference SDK's defect X-abandoned-step-blocks-suspension).
func TestAbandonedStepDoesNotBlockTheParent(t *testing.T) {
	env := durabletest.New(t)
	release := make(chan struct{})
	durabletest.Register(env, "stuck-step", func(ctx durable.Context, _ string) (int, error) {
		res, err := durable.Parallel(ctx, "one-of", []durable.Branch[string]{
			{Func: func(bctx durable.Context) (string, error) {
				return durable.Step(bctx, "ignores-cancellation", func(durable.StepContext) (string, error) {
					<-release // a body that does not look at its context
					return "slow", nil
				})
			}},
			{Func: func(durable.Context) (string, error) { return "quick", nil }},
		}, durable.WithCompletion(durable.MinSuccessful(1)))
		if err != nil {
			return 0, err
		}
		if err := durable.Wait(ctx, "long-wait", 30*time.Millisecond); err != nil {
			return 0, err
		}
		return res.StartedCount(), nil
	})
	got, err := durabletest.Run[int](env, "stuck-step", "")
	close(release)
	require.NoError(t, err)
	require.Equal(t, 1, got)
}

// A Parallel renamed after it finished fails the execution with a NonDeterminismError
// (reference case X-nondeterminism-A), wherever its branches ran.
func TestRenamedParallelIsNonDeterministic(t *testing.T) {
	// The handler's runs before the one after the wait: on the fleet, the opening and the resume.
	for placement, before := range map[durable.Placement]int32{durable.PlacementInline: 1, durable.PlacementFleet: 2} {
		t.Run(placement.String(), func(t *testing.T) {
			env := durabletest.New(t)
			var invocation atomic.Int32
			durabletest.Register(env, "renamed", func(ctx durable.Context, _ string) (string, error) {
				name := "orig-name"
				if invocation.Add(1) > before {
					name = "renamed"
				}
				if _, err := durable.Parallel(ctx, name, []durable.Branch[int]{{Func: func(durable.Context) (int, error) { return 1, nil }}},
					durable.WithPlacement(placement)); err != nil {
					return "", err
				}
				return "", durable.Wait(ctx, "then", 10*time.Millisecond)
			})
			_, err := durabletest.Run[string](env, "renamed", "")
			ee := requireFailed(t, err, "NonDeterminismError")
			require.Contains(t, ee.Message, `checkpoint has PARALLEL "orig-name", handler now calls PARALLEL "renamed"`)
		})
	}
}

// A branch suspended in a wait that renames its first step on replay fails the execution with a
// NonDeterminismError at that step (reference case X-nondeterminism-C).
func TestBranchRenamingAStepIsNonDeterministic(t *testing.T) {
	env := durabletest.New(t)
	var runs atomic.Int32
	durabletest.Register(env, "branch-drifts", func(ctx durable.Context, _ string) (string, error) {
		_, err := durable.Parallel(ctx, "p", []durable.Branch[string]{
			{Func: func(durable.Context) (string, error) { return "steady", nil }},
			{Func: func(bctx durable.Context) (string, error) {
				name := "before-wait"
				if runs.Add(1) > 1 {
					name = "renamed-before-wait"
				}
				if _, err := durable.Step(bctx, name, func(durable.StepContext) (int, error) { return 1, nil }); err != nil {
					return "", err
				}
				return "woke", durable.Wait(bctx, "w", 20*time.Millisecond)
			}},
		})
		return "", err
	})
	_, err := durabletest.Run[string](env, "branch-drifts", "")
	ee := requireFailed(t, err, "NonDeterminismError")
	require.Contains(t, ee.Message, `operation 1-2-1: checkpoint has STEP "before-wait"`)
}

// A branch count that changes while the batch runs is a NonDeterminismError (SEMANTICS.md rule 20,
// jetflow's improvement on the reference). On the fleet, a branch task replays the handler and
// finds the batch of 3 it belongs to now has 2; inline, the branch that waits suspends the
// invocation with the batch recorded as started, and the run after the wait has one branch fewer.
func TestChangedBranchCountIsNonDeterministic(t *testing.T) {
	for _, placement := range []durable.Placement{durable.PlacementFleet, durable.PlacementInline} {
		t.Run(placement.String(), func(t *testing.T) {
			env := durabletest.New(t)
			var invocation atomic.Int32
			durabletest.Register(env, "shrinks", func(ctx durable.Context, _ string) (string, error) {
				n := 3
				if invocation.Add(1) > 1 {
					n = 2
				}
				branches := make([]durable.Branch[int], n)
				for i := range branches {
					branches[i] = durable.Branch[int]{Func: func(bctx durable.Context) (int, error) {
						if i == 2 {
							return i, durable.Wait(bctx, "pause", 10*time.Millisecond)
						}
						return i, nil
					}}
				}
				_, err := durable.Parallel(ctx, "p", branches, durable.WithPlacement(placement))
				return "", err
			})
			_, err := durabletest.Run[string](env, "shrinks", "")
			ee := requireFailed(t, err, "NonDeterminismError")
			require.Contains(t, ee.Message, "checkpoint has a batch of 3 branches, handler now calls 2 branches")
		})
	}
}

func TestBranchPanicIsAFailedItem(t *testing.T) {
	env := durabletest.New(t)
	durabletest.Register(env, "branch-panics", func(ctx durable.Context, _ string) ([]string, error) {
		res, err := durable.Parallel(ctx, "p", []durable.Branch[int]{
			{Func: func(durable.Context) (int, error) { panic("index out of range") }},
			{Func: func(durable.Context) (int, error) { return 7, nil }},
		}, durable.WithCompletion(durable.AllCompleted()))
		if err != nil {
			return nil, err
		}
		var be *durable.BranchError
		if !errors.As(res.ThrowIfError(), &be) {
			return nil, fmt.Errorf("want a BranchError, got %T", res.ThrowIfError())
		}
		return []string{be.ErrorType, be.Message, fmt.Sprint(res.Results())}, nil
	})
	got, err := durabletest.Run[[]string](env, "branch-panics", "")
	require.NoError(t, err)
	require.Equal(t, []string{"Panic", "branch panicked: index out of range", "[7]"}, got)
}
