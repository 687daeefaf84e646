package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/durable"
	"github.com/jetflow/jetflow/durabletest"
	"github.com/jetflow/jetflow/messages"
)

// stepLedger tells, for each branch, how often its step body ran and whether it ran although the
// step's checkpoint already existed — alone, or inside the branch's outcome record — which must
// never happen. It reads the checkpoints from the store when a body starts.
type stepLedger struct {
	kv      jetstream.KeyValue
	mu      sync.Mutex
	runs    map[int]int
	rerun   []int // branches whose step body ran after their checkpoint existed
	started chan struct{}
	once    sync.Once
}

func newStepLedger(env *durabletest.Env) *stepLedger {
	js, err := jetstream.New(env.Conn())
	if err != nil {
		panic(err)
	}
	kv, err := js.KeyValue(context.Background(), messages.CheckpointBucket)
	if err != nil {
		panic(err)
	}
	return &stepLedger{kv: kv, runs: map[int]int{}, started: make(chan struct{})}
}

// body records a run of branch i's step (operation 1-<i+1>-1 of batch 1) in execution exec. The
// branch's outcome is looked for under both keys: on the fleet, and inline.
func (l *stepLedger) body(exec string, i int) {
	ctx := context.Background()
	_, errStep := l.kv.Get(ctx, messages.CheckpointKey(exec, "1-"+strconv.Itoa(i+1)+"-1"))
	_, errOutcome := l.kv.Get(ctx, messages.CheckpointKey(exec, messages.BranchRecordID(exec, "1", i)))
	_, errInline := l.kv.Get(ctx, messages.CheckpointKey(exec, messages.InlineRecordID("1", i)))
	l.mu.Lock()
	defer l.mu.Unlock()
	l.runs[i]++
	if errStep == nil || errOutcome == nil || errInline == nil {
		l.rerun = append(l.rerun, i)
	}
	if len(l.runs) >= 12 {
		l.once.Do(func() { close(l.started) })
	}
}

// ran reports how many branches have run their step body.
func (l *stepLedger) ran() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.runs)
}

// squares is a Parallel "squares" as batch 1 of its handler: each branch checkpoints a step, then
// keeps working outside any step for hold, so that a crash finds branches in every state; the
// branches refuses says fail.
type squares struct {
	n, maxConcurrency int
	hold              time.Duration
	refuses           func(i int) bool
	opts              []durable.BatchOption
}

func (sq squares) handler(l *stepLedger) func(durable.Context, string) (string, error) {
	return func(ctx durable.Context, _ string) (string, error) {
		branches := make([]durable.Branch[int], sq.n)
		for i := range branches {
			branches[i] = durable.Branch[int]{Func: func(bctx durable.Context) (int, error) {
				exec := bctx.ExecutionID()
				v, err := durable.Step(bctx, "square", func(durable.StepContext) (int, error) {
					l.body(exec, i)
					return i * i, nil
				})
				if err != nil {
					return 0, err
				}
				hold(bctx, sq.hold)
				if sq.refuses(i) {
					return 0, fmt.Errorf("branch %d refuses", i)
				}
				return v, nil
			}}
		}
		opts := append([]durable.BatchOption{durable.WithMaxConcurrency(sq.maxConcurrency)}, sq.opts...)
		res, err := durable.Parallel(ctx, "squares", branches, opts...)
		if err != nil {
			return "", err
		}
		b, err := json.Marshal(res)
		return string(b), err
	}
}

// batchHandler is a 60-branch Parallel on the fleet, 6 at a time, every seventh branch failing.
func batchHandler(l *stepLedger) func(durable.Context, string) (string, error) {
	return squares{n: 60, maxConcurrency: 6, hold: 10 * time.Millisecond, refuses: func(i int) bool { return i%7 == 3 },
		opts: []durable.BatchOption{durable.WithCompletion(durable.ToleratedFailureCount(20))}}.handler(l)
}

// A worker killed while it runs branches, and the coordinator restarted in the middle of the
// batch: the batch completes with the result of an undisturbed run, and no step body ran again
// once its checkpoint existed.
func TestParallelSurvivesWorkerAndCoordinatorCrashes(t *testing.T) {
	undisturbed := func() string {
		env := durabletest.New(t)
		durabletest.Register(env, "squares", batchHandler(newStepLedger(env)))
		got, err := durabletest.Run[string](env, "squares", "")
		require.NoError(t, err)
		return got
	}()

	env := durabletest.New(t, durabletest.WithWorkers(3))
	l := newStepLedger(env)
	durabletest.Register(env, "squares", batchHandler(l))
	ctx, cancel := context.WithTimeout(context.Background(), env.Timeout())
	defer cancel()
	id, err := env.Client().Start(ctx, "squares", "")
	require.NoError(t, err)
	select {
	case <-l.started:
	case <-ctx.Done():
		t.Fatal("the batch never got going")
	}
	env.KillWorker(1)
	env.KillCoordinator(0)
	env.StartCoordinator(0)
	env.StartWorker(1)

	var got string
	require.NoError(t, env.Client().Result(ctx, id, &got))
	require.JSONEq(t, undisturbed, got)
	l.mu.Lock()
	defer l.mu.Unlock()
	require.Empty(t, l.rerun, "step bodies that ran again after their checkpoint")
	require.Len(t, l.runs, 60)
}
