package tests

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/durable"
	"github.com/jetflow/jetflow/durabletest"
)

func checkServices(ctx durable.Context, _ string) (durable.BatchResult[string], error) {
	branch := func(step, result string) durable.Branch[string] {
		return durable.Branch[string]{Func: func(ctx durable.Context) (string, error) {
			return durable.Step(ctx, step, func(durable.StepContext) (string, error) { return result, nil })
		}}
	}
	return durable.Parallel(ctx, "check-services", []durable.Branch[string]{
		branch("check-inventory", "inventory ok"),
		branch("check-payment", "payment ok"),
		branch("check-shipping", "shipping ok"),
	})
}

func TestParallelCheckServices(t *testing.T) {
	env := durabletest.New(t)
	durabletest.Register(env, "check-services", func(ctx durable.Context, in string) (string, error) {
		res, err := checkServices(ctx, in)
		if err != nil {
			return "", err
		}
		b, err := json.Marshal(res)
		return string(b), err
	})
	got, err := durabletest.Run[string](env, "check-services", "")
	require.NoError(t, err)
	require.JSONEq(t, `{"all":[
		{"index":0,"name":"parallel-branch-0","status":"SUCCEEDED","result":"inventory ok"},
		{"index":1,"name":"parallel-branch-1","status":"SUCCEEDED","result":"payment ok"},
		{"index":2,"name":"parallel-branch-2","status":"SUCCEEDED","result":"shipping ok"}],
		"completionReason":"ALL_COMPLETED","status":"SUCCEEDED","successCount":3,"failureCount":0,"startedCount":0,"totalCount":3}`, got)
}

func TestParallelFailFastAndResults(t *testing.T) {
	env := durabletest.New(t)
	var ran atomic.Int32
	durabletest.Register(env, "fail-fast", func(ctx durable.Context, _ string) ([]string, error) {
		res, err := durable.Parallel(ctx, "work", []durable.Branch[int]{
			{Name: "ok", Func: func(durable.Context) (int, error) { ran.Add(1); return 1, nil }},
			{Name: "bad", Func: func(durable.Context) (int, error) { ran.Add(1); return 0, errors.New("boom") }},
		}, durable.WithMaxConcurrency(1))
		if err != nil {
			return nil, err
		}
		var out []string
		for _, it := range res.Items {
			line := fmt.Sprintf("%d %s %s %d", it.Index, it.Name, it.Status, it.Result)
			if it.Err != nil {
				var be *durable.BranchError
				if !errors.As(it.Err, &be) {
					return nil, fmt.Errorf("want BranchError, got %T", it.Err)
				}
				line += " " + be.ErrorType + ": " + be.Message
			}
			out = append(out, line)
		}
		out = append(out, res.Reason.String(), res.Status().String(), fmt.Sprint(res.Results()))
		return out, nil
	})
	got, err := durabletest.Run[[]string](env, "fail-fast", "")
	require.NoError(t, err)
	require.Equal(t, []string{"0 ok SUCCEEDED 1", "1 bad FAILED 0 errors.errorString: boom", "FAILURE_TOLERANCE_EXCEEDED", "FAILED", "[1]"}, got)
	require.Equal(t, int32(2), ran.Load())
}

func TestParallelInvalidOptionsRecordNothing(t *testing.T) {
	env := durabletest.New(t)
	var ran atomic.Int32
	durabletest.Register(env, "bad-options", func(ctx durable.Context, which int) (string, error) {
		opts := [][]durable.BatchOption{
			{durable.WithMaxConcurrency(0)},
			{durable.WithCompletion(durable.MinSuccessful(0))},
			{durable.WithCompletion(durable.ToleratedFailureCount(-1))},
			{durable.WithCompletion(durable.ToleratedFailurePercentage(101))},
		}[which]
		_, err := durable.Parallel(ctx, "checks", []durable.Branch[int]{
			{Func: func(durable.Context) (int, error) { ran.Add(1); return 1, nil }},
		}, opts...)
		if err == nil {
			return "", errors.New("no error")
		}
		// Nothing was recorded at this position: a step can take it.
		if _, err := durable.Step(ctx, "after", func(durable.StepContext) (int, error) { return 1, nil }); err != nil {
			return "", err
		}
		return err.Error(), nil
	})
	for i, want := range []string{
		`durable: Parallel "checks": MaxConcurrency must be at least 1, got 0`,
		`durable: Parallel "checks": MinSuccessful must be at least 1, got 0`,
		`durable: Parallel "checks": ToleratedFailureCount must not be negative, got -1`,
		`durable: Parallel "checks": ToleratedFailurePercentage must be between 0 and 100, got 101`,
	} {
		got, err := durabletest.Run[string](env, "bad-options", i)
		require.NoError(t, err)
		require.Equal(t, want, got)
	}
	require.Zero(t, ran.Load())
}

func TestMapWithItemNamerAndNesting(t *testing.T) {
	env := durabletest.New(t)
	type line struct {
		SKU string
		Qty int
	}
	for _, nesting := range []durable.NestingMode{durable.NestingNested, durable.NestingFlat} {
		fn := fmt.Sprintf("map-%d", nesting)
		durabletest.Register(env, fn, func(ctx durable.Context, items []line) ([]string, error) {
			res, err := durable.Map(ctx, "price", items, func(ctx durable.Context, it line, i int) (int, error) {
				return durable.Step(ctx, "price-"+it.SKU, func(durable.StepContext) (int, error) { return it.Qty * 10, nil })
			}, durable.WithItemNamer(func(it line, i int) string { return it.SKU }), durable.WithNesting(nesting))
			if err != nil {
				return nil, err
			}
			var out []string
			for _, it := range res.Items {
				out = append(out, fmt.Sprintf("%s=%d", it.Name, it.Result))
			}
			return out, nil
		})
		got, err := durabletest.Run[[]string](env, fn, []line{{"a", 1}, {"b", 2}, {"c", 3}})
		require.NoError(t, err)
		require.Equal(t, []string{"a=10", "b=20", "c=30"}, got)
	}
}

func TestNestedParallelsHaveIndependentConfigs(t *testing.T) {
	env := durabletest.New(t, durabletest.WithWorkers(3))
	durabletest.Register(env, "nested", func(ctx durable.Context, _ string) ([]string, error) {
		inner := func(prefix string, failSecond bool) durable.Branch[[]string] {
			return durable.Branch[[]string]{Name: prefix, Func: func(ctx durable.Context) ([]string, error) {
				res, err := durable.Parallel(ctx, "inner-"+prefix, []durable.Branch[string]{
					{Func: func(ctx durable.Context) (string, error) {
						return durable.Step(ctx, prefix+"1", func(durable.StepContext) (string, error) { return prefix + "1", nil })
					}},
					{Func: func(ctx durable.Context) (string, error) {
						if failSecond {
							return "", errors.New(prefix + "2 failed")
						}
						return prefix + "2", nil
					}},
				}, durable.WithCompletion(durable.FirstSuccessful()), durable.WithMaxConcurrency(1))
				if err != nil {
					return nil, err
				}
				return res.Results(), nil
			}}
		}
		res, err := durable.Parallel(ctx, "outer", []durable.Branch[[]string]{inner("a", false), inner("b", true)})
		if err != nil {
			return nil, err
		}
		var out []string
		for _, r := range res.Results() {
			out = append(out, r...)
		}
		return append(out, res.Reason.String()), nil
	})
	got, err := durabletest.Run[[]string](env, "nested", "")
	require.NoError(t, err)
	// Each inner batch stops at its first success: only branch 1 of each ran.
	require.Equal(t, []string{"a1", "b1", "ALL_COMPLETED"}, got)
}

func TestParallelBranchWaitsAndRetries(t *testing.T) {
	env := durabletest.New(t)
	var attempts atomic.Int32
	durabletest.Register(env, "branch-waits", func(ctx durable.Context, _ string) ([]string, error) {
		res, err := durable.Parallel(ctx, "mixed", []durable.Branch[string]{
			{Func: func(ctx durable.Context) (string, error) {
				if err := durable.Wait(ctx, "nap", 50*time.Millisecond); err != nil {
					return "", err
				}
				return "waited", nil
			}},
			{Func: func(ctx durable.Context) (string, error) {
				return durable.Step(ctx, "flaky", func(sc durable.StepContext) (string, error) {
					attempts.Add(1)
					if sc.Attempt() < 2 {
						return "", errors.New("try again")
					}
					return "retried", nil
				}, durable.WithRetry(fastRetry))
			}},
			{Func: func(ctx durable.Context) (string, error) {
				return durable.RunInChildContext(ctx, "child", func(ctx durable.Context) (string, error) {
					return durable.Step(ctx, "in-child", func(durable.StepContext) (string, error) { return "child", nil })
				})
			}},
		})
		if err != nil {
			return nil, err
		}
		return res.Results(), nil
	})
	got, err := durabletest.Run[[]string](env, "branch-waits", "")
	require.NoError(t, err)
	require.Equal(t, []string{"waited", "retried", "child"}, got)
	require.Equal(t, int32(2), attempts.Load())
}
