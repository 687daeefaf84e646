package tests

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/durable"
	"github.com/jetflow/jetflow/durabletest"
	"github.com/jetflow/jetflow/internal/faults"
	"github.com/jetflow/jetflow/messages"
)

// seenTask is a branch task as published, seen by a plain subscriber on the task subjects.
type seenTask struct {
	index int
	msgID string
	fresh bool
}

// watchBranchTasks records every branch task published for function.
func watchBranchTasks(t *testing.T, nc *nats.Conn, function string) func() []seenTask {
	var mu sync.Mutex
	var seen []seenTask
	sub, err := nc.Subscribe(messages.TaskFilter(function), func(m *nats.Msg) {
		task, err := messages.DecodeAs[*messages.RunTask](m.Data)
		if err != nil || len(task.Path) == 0 {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, seenTask{index: task.Path[len(task.Path)-1].Index, msgID: m.Header.Get(jetstream.MsgIDHeader), fresh: task.Fresh})
	})
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return func() []seenTask {
		mu.Lock()
		defer mu.Unlock()
		return append([]seenTask(nil), seen...)
	}
}

// A batch's tasks go out without a Nats-Msg-Id while the coordinator knows none of them was
// published before — first dispatch, and each window move after it — and with one, marked not
// fresh (the worker looks for the outcome first), when the batch is opened again: the request
// came back because its ack was lost, and its branches may be out already.
func TestBranchTasksAreDeduplicatedOnlyWhenTheyMayBeRepeated(t *testing.T) {
	env := durabletest.New(t, durabletest.WithAckWait(time.Second))
	var gate atomic.Pointer[chan struct{}] // the steps wait for it to close
	open := make(chan struct{})
	close(open)
	gate.Store(&open)
	durabletest.Register(env, "dedupe", func(ctx durable.Context, mc int) (int, error) {
		branches := make([]durable.Branch[int], 3)
		for i := range branches {
			branches[i] = durable.Branch[int]{Func: func(bctx durable.Context) (int, error) {
				return durable.Step(bctx, "work", func(durable.StepContext) (int, error) {
					<-*gate.Load()
					return i, nil
				})
			}}
		}
		res, err := durable.Parallel(ctx, "p", branches, durable.WithMaxConcurrency(mc),
			durable.WithPlacement(durable.PlacementFleet)) // its tasks are what this test looks at
		if err != nil {
			return 0, err
		}
		return sumOf(res.Results()), nil
	})
	seen := watchBranchTasks(t, env.Conn(), "dedupe")
	ctx, cancel := context.WithTimeout(context.Background(), env.Timeout())
	defer cancel()

	// A window of one: the first branch at the opening, the others as outcomes come in.
	id, err := env.Client().Start(ctx, "dedupe", 1)
	require.NoError(t, err)
	var sum int
	require.NoError(t, env.Client().Result(ctx, id, &sum))
	require.Equal(t, 3, sum)
	// The subscriber's copies arrive on a connection of their own: wait for them.
	require.Eventually(t, func() bool { return len(seen()) == 3 }, 10*time.Second, 10*time.Millisecond)
	tasks := seen()
	for i, task := range tasks {
		require.Equal(t, seenTask{index: i, fresh: true}, task, "dispatched once: no message id, fresh")
	}

	// The coordinator's first ack of the request that opens the next batch is lost: the request
	// comes back while the batch's branches still run. This coordinator opened the batch and
	// published its tasks, so it dispatches nothing again: a second copy of a task without an
	// id would run its branch twice.
	shut := make(chan struct{})
	gate.Store(&shut)
	var dropped atomic.Bool
	restore := faults.Set(&faults.Hooks{DropAck: func(subject string) bool {
		return strings.HasPrefix(subject, "jetflow.evt.") && strings.Contains(subject, ".end") && dropped.CompareAndSwap(false, true)
	}})
	defer restore()
	before := len(seen())
	id, err = env.Client().Start(ctx, "dedupe", 3)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(seen()) >= before+3 }, 10*time.Second, 10*time.Millisecond)
	// The request is redelivered after the coordinator's AckWait; wait until it was handled.
	requireNothingPending(t, env, messages.EventStream)
	require.True(t, dropped.Load(), "the request's ack was never dropped")
	close(shut)
	require.NoError(t, env.Client().Result(ctx, id, &sum))
	require.Equal(t, 3, sum)
	requireNothingPending(t, env)
	tasks = seen()[before:]
	require.Len(t, tasks, 3, "dispatched once each")
	for _, task := range tasks {
		require.Empty(t, task.msgID)
		require.True(t, task.fresh)
	}
}
