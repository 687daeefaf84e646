package tests

import (
	"context"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/durable"
	"github.com/jetflow/jetflow/durabletest"
	"github.com/jetflow/jetflow/messages"
)

// partitionsOf reports the partitions each running coordinator drives.
func partitionsOf(env *durabletest.Env, n int) [][]int {
	out := make([][]int, n)
	for i := range n {
		if c := env.Coordinator(i); c != nil {
			out[i] = c.Partitions()
		}
	}
	return out
}

// shared reports whether the partitions are split among the coordinators with none driven twice
// and none left out, and each coordinator has at least one.
func shared(ps [][]int, live int) bool {
	var all []int
	for _, p := range ps {
		all = append(all, p...)
	}
	slices.Sort(all)
	if len(all) != messages.Partitions || len(slices.Compact(all)) != messages.Partitions {
		return false
	}
	n := 0
	for _, p := range ps {
		if len(p) > 0 {
			n++
		}
	}
	return n == live
}

// Two coordinators split the partitions; when one dies, the other takes all of them, and an
// execution in the middle of a batch finishes with the same result.
func TestCoordinatorFailover(t *testing.T) {
	env := durabletest.New(t, durabletest.WithCoordinators(2), durabletest.WithWorkers(2))
	eventually(t, func() bool { return shared(partitionsOf(env, 2), 2) }, "two coordinators to split the partitions")

	l := newStepLedger(env)
	durabletest.Register(env, "squares", batchHandler(l))
	ctx, cancel := context.WithTimeout(context.Background(), env.Timeout())
	defer cancel()
	var ids []string
	for range 4 { // executions on several partitions, so that the dying coordinator drives some
		id, err := env.Client().Start(ctx, "squares", "")
		require.NoError(t, err)
		ids = append(ids, id)
	}
	select {
	case <-l.started:
	case <-ctx.Done():
		t.Fatal("the batches never got going")
	}
	env.KillCoordinator(0)
	eventually(t, func() bool { return len(partitionsOf(env, 2)[1]) == messages.Partitions }, "the survivor to take every partition")
	for _, id := range ids {
		var got string
		require.NoError(t, env.Client().Result(ctx, id, &got))
		require.Contains(t, got, `"successCount":51,"failureCount":9,"startedCount":0,"totalCount":60`)
	}

	// A coordinator that joins gets its share back; one that stops gracefully hands over at once.
	env.StartCoordinator(0)
	eventually(t, func() bool { return shared(partitionsOf(env, 2), 2) }, "the partitions to be split again")
	env.StopCoordinator(1)
	eventually(t, func() bool { return len(partitionsOf(env, 2)[0]) == messages.Partitions }, "the partitions to move")
	durabletest.Register(env, "echo-after", func(ctx durable.Context, s string) (string, error) { return s, nil })
	out, err := durabletest.Run[string](env, "echo-after", "still driven")
	require.NoError(t, err)
	require.Equal(t, "still driven", out)
}
