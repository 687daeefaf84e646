package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/durable"
	"github.com/jetflow/jetflow/durabletest"
	"github.com/jetflow/jetflow/internal/faults"
	"github.com/jetflow/jetflow/messages"
)

// seed is JETFLOW_SEED, or a fixed default; it is logged so that a failure can be replayed.
func seed(t *testing.T) uint64 {
	s := uint64(20261128)
	if v := os.Getenv("JETFLOW_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		require.NoError(t, err, "JETFLOW_SEED")
		s = n
	}
	t.Logf("seed %d (replay with JETFLOW_SEED=%d)", s, s)
	return s
}

// distinct counts the distinct branches inside their step at once, and remembers the most.
type distinct struct {
	mu   sync.Mutex
	now  map[int]int
	most int
}

func (d *distinct) enter(i int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.now == nil {
		d.now = map[int]int{}
	}
	d.now[i]++
	d.most = max(d.most, len(d.now))
}

func (d *distinct) leave(i int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.now[i]--; d.now[i] == 0 {
		delete(d.now, i)
	}
}

// wideHandler is a Parallel of n branches, mc at a time; branch i checkpoints i*i in a step,
// optionally waits durably, then works a little outside any step.
func wideHandler(l *stepLedger, g *distinct, n, mc int, waitEvery int) func(durable.Context, string) (string, error) {
	return func(ctx durable.Context, _ string) (string, error) {
		branches := make([]durable.Branch[int], n)
		for i := range branches {
			branches[i] = durable.Branch[int]{Func: func(bctx durable.Context) (int, error) {
				exec := bctx.ExecutionID()
				v, err := durable.Step(bctx, "square", func(sc durable.StepContext) (int, error) {
					g.enter(i)
					defer g.leave(i)
					l.body(exec, i)
					hold(sc, time.Millisecond)
					return i * i, nil
				})
				if err != nil {
					return 0, err
				}
				if waitEvery > 0 && i%waitEvery == 0 {
					if err := durable.Wait(bctx, "pause", 5*time.Millisecond); err != nil {
						return 0, err
					}
				}
				hold(bctx, time.Millisecond)
				return v, nil
			}}
		}
		res, err := durable.Parallel(ctx, "wide", branches, durable.WithMaxConcurrency(mc))
		if err != nil {
			return "", err
		}
		b, err := json.Marshal(res)
		return string(b), err
	}
}

// undisturbedWide is the result wideHandler gives when nothing goes wrong.
func undisturbedWide(n int) string {
	res := durable.BatchResult[int]{Reason: durable.CompletionAllCompleted}
	for i := range n {
		res.Items = append(res.Items, durable.BatchItem[int]{Index: i, Name: fmt.Sprintf("parallel-branch-%d", i),
			Status: durable.BatchItemSucceeded, Result: i * i})
	}
	b, _ := json.Marshal(res)
	return string(b)
}

// Workers are killed at random moments, 20 times, while a 1,000-branch Parallel runs on three of
// them: the batch finishes with the undisturbed result, no step body ran again after its
// checkpoint, the window held, and nothing is left unfinished.
func TestKillWorkersDuringAWideParallel(t *testing.T) {
	const n, mc, kills = 1000, 40, 20
	rng := rand.New(rand.NewPCG(seed(t), 1))
	// An ack wait long enough that a worker busy on a loaded machine is not presumed dead: a
	// presumed-dead worker's step may legitimately run twice (before its checkpoint exists).
	env := durabletest.New(t, durabletest.WithWorkers(3), durabletest.WithAckWait(3*time.Second))
	l, g := newStepLedger(env), &distinct{}
	durabletest.Register(env, "wide", wideHandler(l, g, n, mc, 0))
	ctx, cancel := context.WithTimeout(context.Background(), 2*env.Timeout())
	defer cancel()
	id, err := env.Client().Start(ctx, "wide", "")
	require.NoError(t, err)

	done := make(chan struct{})
	var killed int
	var wg sync.WaitGroup
	wg.Go(func() {
		for killed < kills {
			select {
			case <-done:
				return
			case <-time.After(time.Duration(30+rng.IntN(120)) * time.Millisecond):
			}
			i := rng.IntN(3)
			env.KillWorker(i)
			env.StartWorker(i)
			killed++
		}
	})
	var got string
	err = env.Client().Result(ctx, id, &got)
	close(done)
	wg.Wait()
	require.NoError(t, err)
	require.Equal(t, kills, killed, "the batch ended before every kill; make it longer")
	require.JSONEq(t, undisturbedWide(n), got)
	l.mu.Lock()
	require.Empty(t, l.rerun, "step bodies that ran again after their checkpoint")
	require.Len(t, l.runs, n)
	l.mu.Unlock()
	require.LessOrEqual(t, g.most, mc, "branches in their step at once")
	requireNothingPending(t, env)
}

// Acks dropped at random everywhere (so tasks, events and branch outcomes are delivered again
// after they were handled), stale requests and duplicate outcomes injected: every branch is
// counted once and the result is the undisturbed one.
func TestDuplicateAndReorderedDeliveriesCountOnce(t *testing.T) {
	const n, mc = 200, 20
	rng := rand.New(rand.NewPCG(seed(t), 2))
	var mu sync.Mutex
	dropped := map[string]int{}
	restore := faults.Set(&faults.Hooks{DropAck: func(subject string) bool {
		mu.Lock()
		defer mu.Unlock()
		if rng.IntN(5) != 0 {
			return false
		}
		kind := strings.SplitN(subject, ".", 3)[1] // task, evt, or the KV bucket
		dropped[kind]++
		return true
	}})
	defer restore()

	env := durabletest.New(t, durabletest.WithWorkers(3))
	l, g := newStepLedger(env), &distinct{}
	durabletest.Register(env, "dups", wideHandler(l, g, n, mc, 7))
	ctx, cancel := context.WithTimeout(context.Background(), 2*env.Timeout())
	defer cancel()
	id, err := env.Client().Start(ctx, "dups", "")
	require.NoError(t, err)

	js, err := jetstream.New(env.Conn())
	require.NoError(t, err)
	kv, err := js.KeyValue(ctx, messages.CheckpointBucket)
	require.NoError(t, err)
	<-l.started
	// A stale copy of the request that opened the batch, and a duplicate start, both without
	// deduplication ids.
	stale := messages.MustEncode(&messages.InvocationEnded{ExecutionID: id, TaskID: "start", Outcome: messages.OutcomeSuspended,
		Parallels: []messages.ParallelRequest{{OpID: "1", Config: messages.BatchConfig{N: n, MaxConcurrency: mc}}}})
	_, err = js.Publish(ctx, messages.EventSubject(id, "end"), stale)
	require.NoError(t, err)
	_, err = js.Publish(ctx, messages.EventSubject(id, "start"), messages.MustEncode(&messages.StartExecution{ExecutionID: id, Function: "dups"}))
	require.NoError(t, err)
	// Every branch outcome recorded so far, written again: each reaches the coordinator twice.
	// The first outcomes are written a little after the bodies that started above.
	require.Eventually(t, func() bool {
		_, err := kv.Get(ctx, messages.CheckpointKey(id, messages.BranchRecordID(id, "1", 0)))
		return err == nil
	}, env.Timeout(), time.Millisecond, "branch 0 never recorded its outcome")
	rewritten := 0
	for i := range n {
		key := messages.CheckpointKey(id, messages.BranchRecordID(id, "1", i))
		if e, err := kv.Get(ctx, key); err == nil {
			_, err = kv.Put(ctx, key, e.Value())
			require.NoError(t, err)
			rewritten++
		}
	}

	var got string
	require.NoError(t, env.Client().Result(ctx, id, &got))
	require.JSONEq(t, undisturbedWide(n), got)
	l.mu.Lock()
	require.Empty(t, l.rerun, "step bodies that ran again after their checkpoint")
	l.mu.Unlock()
	require.LessOrEqual(t, g.most, mc)
	mu.Lock()
	t.Logf("acks dropped: %v; outcomes written twice: %d", dropped, rewritten)
	require.Positive(t, dropped["task"])
	require.Positive(t, dropped["evt"])
	require.Positive(t, rewritten)
	mu.Unlock()
}

// requireNothingPending waits until no consumer of the given streams (default: tasks and events)
// holds a message.
func requireNothingPending(t *testing.T, env *durabletest.Env, streams ...string) {
	t.Helper()
	js, err := jetstream.New(env.Conn())
	require.NoError(t, err)
	ctx := context.Background()
	if len(streams) == 0 {
		streams = []string{messages.EventStream, messages.TaskStream}
	}
	eventually(t, func() bool {
		for _, stream := range streams {
			st, err := js.Stream(ctx, stream)
			if err != nil {
				return false
			}
			for name := range st.ConsumerNames(ctx).Name() {
				cons, err := st.Consumer(ctx, name)
				if err != nil {
					return false
				}
				info, err := cons.Info(ctx)
				if err != nil || info.NumPending != 0 || info.NumAckPending != 0 {
					return false
				}
			}
		}
		return true
	}, "every task and event to be handled")
}
