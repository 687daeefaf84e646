package tests

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/client"
	"github.com/jetflow/jetflow/durable"
	"github.com/jetflow/jetflow/durabletest"
	"github.com/jetflow/jetflow/internal/faults"
)

// mixed is the soak's handler: by k, a Parallel, a Map with tolerated failures, nested batches,
// a fail-fast batch, or branches that wait. Every result is independent of timing, so a run with
// faults must give exactly the result of a run without.
func mixed(ctx durable.Context, k int) (string, error) {
	step := func(c durable.Context, name string, v int) (int, error) {
		return durable.Step(c, name, func(durable.StepContext) (int, error) { return v, nil })
	}
	var out any
	switch k % 5 {
	case 0:
		bs := make([]durable.Branch[int], 5)
		for i := range bs {
			bs[i] = durable.Branch[int]{Func: func(c durable.Context) (int, error) { return step(c, "s", k*10+i) }}
		}
		res, err := durable.Parallel(ctx, "par", bs, durable.WithMaxConcurrency(2))
		if err != nil {
			return "", err
		}
		out = res
	case 1:
		res, err := durable.Map(ctx, "map", []int{1, 2, 3, 4, 5, 6}, func(c durable.Context, v, i int) (int, error) {
			if v%3 == 0 {
				return 0, fmt.Errorf("item %d refused", v)
			}
			return step(c, "m", v*k)
		}, durable.WithCompletion(durable.ToleratedFailureCount(10)))
		if err != nil {
			return "", err
		}
		out = res
	case 2:
		outer := make([]durable.Branch[[]int], 2)
		for o := range outer {
			outer[o] = durable.Branch[[]int]{Func: func(c durable.Context) ([]int, error) {
				inner := make([]durable.Branch[int], 3)
				for i := range inner {
					inner[i] = durable.Branch[int]{Func: func(c durable.Context) (int, error) { return step(c, "n", o*100+i) }}
				}
				res, err := durable.Parallel(c, "inner", inner)
				if err != nil {
					return nil, err
				}
				return res.Results(), nil
			}}
		}
		res, err := durable.Parallel(ctx, "outer", outer)
		if err != nil {
			return "", err
		}
		out = res
	case 3:
		bs := make([]durable.Branch[int], 5)
		for i := range bs {
			bs[i] = durable.Branch[int]{Func: func(c durable.Context) (int, error) {
				if i == 2 {
					return 0, errors.New("third fails")
				}
				return step(c, "f", i)
			}}
		}
		res, err := durable.Parallel(ctx, "fail-fast", bs, durable.WithMaxConcurrency(1))
		if err != nil {
			return "", err
		}
		out = res
	case 4:
		bs := make([]durable.Branch[int], 3)
		for i := range bs {
			bs[i] = durable.Branch[int]{Func: func(c durable.Context) (int, error) {
				if err := durable.Wait(c, "w", time.Duration(1+i)*time.Millisecond); err != nil {
					return 0, err
				}
				return step(c, "after-wait", i+k)
			}}
		}
		res, err := durable.Parallel(ctx, "waits", bs)
		if err != nil {
			return "", err
		}
		out = res
	}
	b, err := json.Marshal(out)
	return string(b), err
}

// runMany starts executions 0..n-1 of "mixed", at most 100 at a time, and returns their results.
func runMany(t *testing.T, env *durabletest.Env, n int) map[int]string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	results := make(map[int]string, n)
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 100)
	errs := make(chan error, n)
	for k := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			id, err := env.Client().Start(ctx, "mixed", k, client.WithExecutionName("soak-"+strconv.Itoa(k)))
			if err != nil {
				errs <- err
				return
			}
			var got string
			if err := env.Client().Result(ctx, id, &got); err != nil {
				errs <- fmt.Errorf("execution %d: %w", k, err)
				return
			}
			mu.Lock()
			results[k] = got
			mu.Unlock()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return results
}

// 2,000 executions of a mixed workload, with workers killed at random, a coordinator killed and
// restarted, and acks dropped: every result is the one the same workload gives without faults.
func TestSoakWithFaults(t *testing.T) {
	n := 2000
	if v := os.Getenv("JETFLOW_SOAK"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	start := time.Now()
	calm := func() map[int]string {
		env := durabletest.New(t, durabletest.WithWorkers(2))
		durabletest.Register(env, "mixed", mixed)
		return runMany(t, env, n)
	}()
	t.Logf("without faults: %s", time.Since(start))
	start = time.Now()

	rng := rand.New(rand.NewPCG(seed(t), 3))
	var mu sync.Mutex
	drops := 0
	restore := faults.Set(&faults.Hooks{DropAck: func(string) bool {
		mu.Lock()
		defer mu.Unlock()
		if rng.IntN(20) == 0 {
			drops++
			return true
		}
		return false
	}})
	defer restore()
	env := durabletest.New(t, durabletest.WithWorkers(3))
	durabletest.Register(env, "mixed", mixed)
	done := make(chan struct{})
	var kills int
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(400 * time.Millisecond):
			}
			mu.Lock()
			victim := rng.IntN(4)
			mu.Unlock()
			if victim == 3 {
				env.KillCoordinator(0)
				env.StartCoordinator(0)
			} else {
				env.KillWorker(victim)
				env.StartWorker(victim)
			}
			kills++
		}
	})
	stormy := runMany(t, env, n)
	close(done)
	wg.Wait()
	mu.Lock()
	dropped := drops
	mu.Unlock()
	t.Logf("with faults: %s; %d executions; %d kills; %d acks dropped", time.Since(start), n, kills, dropped)
	require.Positive(t, kills)
	require.Len(t, stormy, n)
	for k := range n {
		require.JSONEq(t, calm[k], stormy[k], "execution %d (kind %d)", k, k%5)
	}
}
