package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/durable"
	"github.com/jetflow/jetflow/durabletest"
)

// inlineHandler is a batch of 12 branches run inline, 3 at a time, every fifth branch failing.
func inlineHandler(l *stepLedger) func(durable.Context, string) (string, error) {
	return squares{n: 12, maxConcurrency: 3, hold: 20 * time.Millisecond, refuses: func(i int) bool { return i%5 == 4 },
		opts: []durable.BatchOption{durable.WithCompletion(durable.AllCompleted()), durable.WithPlacement(durable.PlacementInline)}}.handler(l)
}

// Every worker killed while an inline batch runs: the batch's task runs again on a new worker,
// which finds the outcomes recorded so far, runs only the other branches, and returns the result
// of an undisturbed run.
func TestAnInlineBatchSurvivesItsWorkersCrash(t *testing.T) {
	undisturbed := func() string {
		env := durabletest.New(t)
		durabletest.Register(env, "inline-squares", inlineHandler(newStepLedger(env)))
		got, err := durabletest.Run[string](env, "inline-squares", "")
		require.NoError(t, err)
		return got
	}()

	env := durabletest.New(t, durabletest.WithWorkers(2), durabletest.WithAckWait(time.Second))
	l := newStepLedger(env)
	durabletest.Register(env, "inline-squares", inlineHandler(l))
	ctx, cancel := context.WithTimeout(context.Background(), env.Timeout())
	defer cancel()
	id, err := env.Client().Start(ctx, "inline-squares", "")
	require.NoError(t, err)
	eventually(t, func() bool { return l.ran() >= 5 }, "five branches under way")
	env.KillWorker(0)
	env.KillWorker(1)
	before := l.ran()
	env.StartWorker(0)

	var got string
	require.NoError(t, env.Client().Result(ctx, id, &got))
	require.JSONEq(t, undisturbed, got)
	l.mu.Lock()
	defer l.mu.Unlock()
	require.Empty(t, l.rerun, "step bodies that ran again after their branch's outcome was recorded")
	require.Len(t, l.runs, 12)
	require.Less(t, before, 12, "the batch ended before the kill; make it longer")
}

// A Map of a few items runs inline by default, and its result is the one the fleet gives.
func TestASmallBatchGivesTheSameResultInlineAndOnTheFleet(t *testing.T) {
	env := durabletest.New(t, durabletest.WithWorkers(2))
	run := func(placement durable.Placement) string {
		fn := "map-" + placement.String()
		durabletest.Register(env, fn, func(ctx durable.Context, _ string) (string, error) {
			res, err := durable.Map(ctx, "double", []int{1, 2, 3, 4, 5}, func(ctx durable.Context, item, _ int) (int, error) {
				if item == 4 {
					return 0, fmt.Errorf("no fours")
				}
				return durable.Step(ctx, "double", func(durable.StepContext) (int, error) { return 2 * item, nil })
			}, durable.WithPlacement(placement), durable.WithMaxConcurrency(2), durable.WithCompletion(durable.ToleratedFailureCount(1)))
			if err != nil {
				return "", err
			}
			b, err := json.Marshal(res)
			return string(b), err
		})
		got, err := durabletest.Run[string](env, fn, "")
		require.NoError(t, err)
		return got
	}
	auto, fleet := run(durable.PlacementAuto), run(durable.PlacementFleet)
	require.JSONEq(t, fleet, auto)
	require.Contains(t, auto, `"successCount":4`)
}

// Inline batches inside the branches of a batch on the fleet, whose branches wait: each fleet
// branch suspends with its inline branches' timers (addressed to itself), resumes, and the result
// is the one with everything on the fleet.
func TestInlineBatchesInsideFleetBranchesThatWait(t *testing.T) {
	env := durabletest.New(t, durabletest.WithWorkers(2))
	handler := func(inner durable.Placement) func(durable.Context, string) ([]int, error) {
		return func(ctx durable.Context, _ string) ([]int, error) {
			outer := make([]durable.Branch[int], 3)
			for i := range outer {
				outer[i] = durable.Branch[int]{Func: func(bctx durable.Context) (int, error) {
					res, err := durable.Map(bctx, "inner", []int{1, 2, 3}, func(c durable.Context, item, _ int) (int, error) {
						if err := durable.Wait(c, "pause", time.Duration(item)*time.Millisecond); err != nil {
							return 0, err
						}
						return durable.Step(c, "times", func(durable.StepContext) (int, error) { return item * (i + 1), nil })
					}, durable.WithPlacement(inner), durable.WithMaxConcurrency(2))
					if err != nil {
						return 0, err
					}
					return sumOf(res.Results()), nil
				}}
			}
			res, err := durable.Parallel(ctx, "outer", outer, durable.WithPlacement(durable.PlacementFleet))
			if err != nil {
				return nil, err
			}
			return res.Results(), nil
		}
	}
	durabletest.Register(env, "nested-inline", handler(durable.PlacementInline))
	durabletest.Register(env, "nested-fleet", handler(durable.PlacementFleet))
	inline, err := durabletest.Run[[]int](env, "nested-inline", "")
	require.NoError(t, err)
	fleet, err := durabletest.Run[[]int](env, "nested-fleet", "")
	require.NoError(t, err)
	require.Equal(t, []int{6, 12, 18}, inline)
	require.Equal(t, fleet, inline)
}

// A batch on the fleet opened inside a branch of an inline batch: its branch tasks are addressed
// through the inline branch, its completion resumes the handler, and the inline batch finishes
// from its records.
func TestAFleetBatchInsideAnInlineBranch(t *testing.T) {
	env := durabletest.New(t, durabletest.WithWorkers(2))
	items := make([]int, 100)
	for i := range items {
		items[i] = i
	}
	durabletest.Register(env, "fleet-in-inline", func(ctx durable.Context, _ string) ([]int, error) {
		res, err := durable.Parallel(ctx, "outer", []durable.Branch[int]{
			{Func: func(c durable.Context) (int, error) {
				return durable.Step(c, "small", func(durable.StepContext) (int, error) { return 1, nil })
			}},
			{Func: func(c durable.Context) (int, error) {
				squares, err := durable.Map(c, "wide", items, func(c durable.Context, item, _ int) (int, error) {
					return durable.Step(c, "square", func(durable.StepContext) (int, error) { return item * item, nil })
				}) // 100 items: on the fleet
				if err != nil {
					return 0, err
				}
				return sumOf(squares.Results()), nil
			}},
		}) // 2 branches: inline
		if err != nil {
			return nil, err
		}
		return res.Results(), nil
	})
	got, err := durabletest.Run[[]int](env, "fleet-in-inline", "")
	require.NoError(t, err)
	require.Equal(t, []int{1, 328350}, got)
}

// sumOf adds up a batch's results.
func sumOf(xs []int) int {
	sum := 0
	for _, x := range xs {
		sum += x
	}
	return sum
}
