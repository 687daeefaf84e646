package engine

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/kvstore"
	"github.com/jetflow/jetflow/messages"
)

// inlineHandler opens a batch of n branches run inline (each one step returning its index, or
// failing when fail says so) and returns the summary's counts.
func inlineHandler(n int, cfg messages.BatchConfig, runs *atomic.Int32, fail func(int) bool) Handler {
	return func(ctx *Context, _ []byte) ([]byte, error) {
		cfg.N = n
		spec := BatchSpec{Name: "p", Config: cfg, Placement: PlaceInline}
		for i := range n {
			spec.Branches = append(spec.Branches, func(bc *Context) ([]byte, error) {
				return bc.Step("s", StepOptions{}, func(*StepContext) ([]byte, error) {
					runs.Add(1)
					if fail != nil && fail(i) {
						return nil, errors.New("no")
					}
					return []byte{byte(i)}, nil
				})
			})
		}
		out, err := ctx.Parallel(spec)
		if err != nil {
			return nil, err
		}
		s := out.Summary
		return []byte{byte(s.Started), byte(s.Succeeded), byte(s.Failed)}, nil
	}
}

func decodeAt(t *testing.T, store *memStore, op string) *messages.Checkpoint {
	t.Helper()
	e, err := store.Get(context.Background(), messages.CheckpointKey("x", op))
	require.NoError(t, err, op)
	cp, err := messages.DecodeAs[*messages.Checkpoint](e.Value)
	require.NoError(t, err)
	return cp
}

// firstRun runs h as an execution's first invocation over store.
func firstRun(store Store, h Handler) Outcome {
	return NewInvocation(context.Background(), Config{ExecutionID: "x", Store: store, FirstRun: true}, nil).Run(context.Background(), h, nil)
}

// succeededOf is a handler that runs the batch spec and returns how many branches succeeded.
func succeededOf(spec BatchSpec) Handler {
	return func(ctx *Context, _ []byte) ([]byte, error) {
		out, err := ctx.Parallel(spec)
		if err != nil {
			return nil, err
		}
		return []byte{byte(out.Summary.Succeeded)}, nil
	}
}

func TestAnInlineBatchRecordsEachBranchThenItsSummary(t *testing.T) {
	store := &memStore{m: map[string]kvstore.Entry{}}
	var runs atomic.Int32
	h := inlineHandler(5, messages.BatchConfig{MaxConcurrency: 2}, &runs, nil)
	out := firstRun(store, h)
	require.Equal(t, Completed, out.Kind, out.Error)
	require.Equal(t, []byte{5, 5, 0}, out.Result)
	require.EqualValues(t, 5, runs.Load())
	p := decodeAt(t, store, "1")
	require.Equal(t, messages.OpSucceeded, p.Status)
	require.True(t, p.Batch.Inline)
	require.Equal(t, messages.ReasonAllCompleted, p.Summary.Reason)
	require.NotEmpty(t, p.Inner, "the outcome that completed the batch rides on its record")
	riding := map[string]*messages.Checkpoint{}
	for _, in := range p.Inner {
		riding[in.OpID] = in
	}
	for i := range 5 {
		id := messages.InlineRecordID("1", i)
		cp := riding[id]
		if cp == nil {
			cp = decodeAt(t, store, id)
		}
		require.Equal(t, messages.OpSucceeded, cp.Status)
		require.Len(t, cp.Inner, 1, "the branch's step rides on its outcome")
	}
	_, err := store.Get(context.Background(), messages.CheckpointKey("x", messages.BranchRecordID("x", "1", 0)))
	require.ErrorIs(t, err, kvstore.ErrNotFound, "no record a coordinator would count")

	// A replay returns the same without running anything.
	loaded := make([]Loaded, 0, len(store.m))
	for _, e := range store.m {
		cp, err := messages.DecodeAs[*messages.Checkpoint](e.Value)
		require.NoError(t, err)
		loaded = append(loaded, Loaded{Checkpoint: cp, Revision: e.Revision})
	}
	again := NewInvocation(context.Background(), Config{ExecutionID: "x", Store: store}, loaded).Run(context.Background(), h, nil)
	require.Equal(t, Completed, again.Kind)
	require.Equal(t, out.Result, again.Result)
	require.EqualValues(t, 5, runs.Load())
}

// An execution's first run reads nothing for an inline batch, and writes at most one record per
// branch and the batch's record.
func TestAFirstRunsInlineBatchReadsNothing(t *testing.T) {
	store := &countingStore{memStore: memStore{m: map[string]kvstore.Entry{}}}
	var runs atomic.Int32
	out := NewInvocation(context.Background(), Config{ExecutionID: "x", Store: store, Listed: true, FirstRun: true}, nil).
		Run(context.Background(), inlineHandler(3, messages.BatchConfig{}, &runs, nil), nil)
	require.Equal(t, Completed, out.Kind, out.Error)
	require.Zero(t, store.gets)
	require.Equal(t, len(store.m), store.writes, "one write per record")
	require.LessOrEqual(t, store.writes, 4, "a record per branch at most, and the batch's")
}

// A run that crashed after some branches recorded their outcomes, and before the batch
// completed, runs only the others again.
func TestAnInlineBatchResumesFromItsBranchRecords(t *testing.T) {
	store := &memStore{m: map[string]kvstore.Entry{}}
	for _, i := range []int{0, 2} {
		cp := &messages.Checkpoint{OpID: messages.InlineRecordID("1", i), OpKind: messages.OpBranch, Status: messages.OpSucceeded,
			Result: []byte{byte(i)}}
		_, err := store.Create(context.Background(), messages.CheckpointKey("x", cp.OpID), messages.MustEncode(cp))
		require.NoError(t, err)
	}
	var runs atomic.Int32
	h := inlineHandler(4, messages.BatchConfig{}, &runs, nil)
	out := NewInvocation(context.Background(), Config{ExecutionID: "x", Store: store, Listed: true}, nil).Run(context.Background(), h, nil)
	require.Equal(t, Completed, out.Kind, out.Error)
	require.Equal(t, []byte{4, 4, 0}, out.Result)
	require.EqualValues(t, 2, runs.Load(), "branches 1 and 3 only")
}

// The completion policy is the coordinator's: with the default, the first failure ends the
// batch, and the branches still running are abandoned and record nothing.
func TestAnInlineBatchAbandonsWhatIsLeftOnceItCompletes(t *testing.T) {
	store := &memStore{m: map[string]kvstore.Entry{}}
	stuck := make(chan struct{})
	h := func(ctx *Context, _ []byte) ([]byte, error) {
		spec := BatchSpec{Name: "p", Config: messages.BatchConfig{N: 2}, Placement: PlaceInline, Branches: []BranchFunc{
			func(bc *Context) ([]byte, error) {
				return bc.Step("waits", StepOptions{}, func(sc *StepContext) ([]byte, error) {
					<-sc.Done() // cancelled when the batch completes without it
					close(stuck)
					return []byte{1}, nil
				})
			},
			func(*Context) ([]byte, error) { return nil, errors.New("fails") },
		}}
		out, err := ctx.Parallel(spec)
		if err != nil {
			return nil, err
		}
		return []byte{byte(out.Summary.Reason), byte(out.Summary.Started), byte(out.Summary.Failed)}, nil
	}
	out := firstRun(store, h)
	require.Equal(t, Completed, out.Kind, out.Error)
	require.Equal(t, []byte{byte(messages.ReasonFailureToleranceExceeded), 2, 1}, out.Result)
	select {
	case <-stuck:
	case <-time.After(10 * time.Second):
		t.Fatal("the abandoned branch's step was never cancelled")
	}
	_, err := store.Get(context.Background(), messages.CheckpointKey("x", messages.InlineRecordID("1", 0)))
	require.ErrorIs(t, err, kvstore.ErrNotFound, "an abandoned branch records nothing")
}

// A branch that waits keeps its slot; once nothing else can run, the invocation suspends with its
// timer (for the handler: no path), and the batch is recorded as started, inline.
func TestAnInlineBranchThatWaitsSuspendsTheInvocation(t *testing.T) {
	store := &memStore{m: map[string]kvstore.Entry{}}
	var others atomic.Int32
	h := func(ctx *Context, _ []byte) ([]byte, error) {
		spec := BatchSpec{Name: "p", Config: messages.BatchConfig{N: 3, MaxConcurrency: 1}, Placement: PlaceInline}
		spec.Branches = []BranchFunc{
			func(bc *Context) ([]byte, error) { return []byte{0xc0}, bc.Wait("w", time.Hour) },
			func(*Context) ([]byte, error) { others.Add(1); return []byte{0xc0}, nil },
			func(*Context) ([]byte, error) { others.Add(1); return []byte{0xc0}, nil },
		}
		_, err := ctx.Parallel(spec)
		return nil, err
	}
	out := firstRun(store, h)
	require.Equal(t, Suspended, out.Kind, out.Error)
	require.Len(t, out.Timers, 1)
	require.Equal(t, "1-1-1", out.Timers[0].OpID)
	require.Empty(t, out.Timers[0].Path)
	require.Zero(t, others.Load(), "the waiting branch holds the only slot")
	p := decodeAt(t, store, "1")
	require.Equal(t, messages.OpStarted, p.Status)
	require.True(t, p.Batch.Inline)
}

// A batch on the fleet opened inside an inline branch is addressed through that branch (Via),
// and its completion resumes the invocation that runs the inline batch (Path).
func TestABatchOpenedInAnInlineBranchIsAddressedThroughIt(t *testing.T) {
	store := &memStore{m: map[string]kvstore.Entry{}}
	inner := BatchSpec{Name: "inner", Config: messages.BatchConfig{N: 2}, Placement: PlaceFleet,
		Branches: []BranchFunc{func(*Context) ([]byte, error) { return nil, nil }, func(*Context) ([]byte, error) { return nil, nil }}}
	h := func(ctx *Context, _ []byte) ([]byte, error) {
		spec := BatchSpec{Name: "outer", Config: messages.BatchConfig{N: 2}, Placement: PlaceInline, Branches: []BranchFunc{
			func(*Context) ([]byte, error) { return []byte{0xc0}, nil },
			func(bc *Context) ([]byte, error) { _, err := bc.Parallel(inner); return []byte{0xc0}, err },
		}}
		_, err := ctx.Parallel(spec)
		return nil, err
	}
	out := firstRun(store, h)
	require.Equal(t, Suspended, out.Kind, out.Error)
	require.Len(t, out.Parallels, 1)
	req := out.Parallels[0]
	require.Equal(t, "1-2-1", req.OpID)
	require.Empty(t, req.Path)
	require.Equal(t, []messages.BranchRef{{OpID: "1", Index: 1}}, req.Via)
	require.Equal(t, messages.OpSucceeded, decodeAt(t, store, messages.InlineRecordID("1", 0)).Status, "the other branch finished")

	// A branch task of the inner batch replays through the inline branch and runs its branch.
	task := NewInvocation(context.Background(), Config{ExecutionID: "x", Store: store, Listed: true,
		Path: []messages.BranchRef{{OpID: "1", Index: 1}, {OpID: "1-2-1", Index: 0}}}, nil)
	require.NoError(t, store.putRecord(&messages.Checkpoint{OpID: "1-2-1", OpKind: messages.OpParallel, Name: "inner",
		Status: messages.OpStarted, Batch: &inner.Config}))
	got := task.Run(context.Background(), h, nil)
	require.Equal(t, BranchDone, got.Kind, got.Error)
	require.Equal(t, messages.OpSucceeded, decodeAt(t, store, messages.BranchRecordID("x", "1-2-1", 0)).Status)
}

func (s *memStore) putRecord(cp *messages.Checkpoint) error {
	_, err := s.Create(context.Background(), messages.CheckpointKey("x", cp.OpID), messages.MustEncode(cp))
	return err
}

// A branch that finishes while others still run is stored at once; the one that completes the
// batch rides on the batch's record.
func TestAnInlineBranchIsStoredAsItFinishes(t *testing.T) {
	store := &memStore{m: map[string]kvstore.Entry{}}
	first := messages.CheckpointKey("x", messages.InlineRecordID("1", 0))
	h := succeededOf(BatchSpec{Name: "p", Config: messages.BatchConfig{N: 2}, Placement: PlaceInline, Branches: []BranchFunc{
		func(*Context) ([]byte, error) { return []byte{0}, nil },
		func(*Context) ([]byte, error) {
			deadline := time.Now().Add(10 * time.Second)
			for { // finishes only once branch 0's outcome is stored
				if _, err := store.Get(context.Background(), first); err == nil {
					return []byte{1}, nil
				}
				if time.Now().After(deadline) {
					return nil, errors.New("branch 0 was never stored on its own")
				}
				runtime.Gosched()
			}
		},
	}})
	out := firstRun(store, h)
	require.Equal(t, Completed, out.Kind, out.Error)
	require.Equal(t, []byte{2}, out.Result)
	p := decodeAt(t, store, "1")
	require.Len(t, p.Inner, 1)
	require.Equal(t, messages.InlineRecordID("1", 1), p.Inner[0].OpID)
	_, err := store.Get(context.Background(), messages.CheckpointKey("x", messages.InlineRecordID("1", 1)))
	require.ErrorIs(t, err, kvstore.ErrNotFound)
}

// failingStore fails every write of one key, and says when it first did.
type failingStore struct {
	memStore
	key    string
	failed chan struct{}
	once   sync.Once
}

func (s *failingStore) Create(ctx context.Context, key string, value []byte) (uint64, error) {
	if key == s.key {
		s.once.Do(func() { close(s.failed) })
		return 0, errors.New("store unreachable")
	}
	return s.memStore.Create(ctx, key, value)
}

// A branch whose outcome cannot be stored aborts the invocation (its task runs again later); the
// batch neither completes nor hangs.
func TestAnInlineBranchThatCannotBeStoredAbortsTheInvocation(t *testing.T) {
	store := &failingStore{memStore: memStore{m: map[string]kvstore.Entry{}}, key: messages.CheckpointKey("x", messages.InlineRecordID("1", 0)),
		failed: make(chan struct{})}
	h := func(ctx *Context, _ []byte) ([]byte, error) {
		spec := BatchSpec{Name: "p", Config: messages.BatchConfig{N: 2}, Placement: PlaceInline, Branches: []BranchFunc{
			func(*Context) ([]byte, error) { return []byte{0}, nil },
			func(bc *Context) ([]byte, error) {
				select { // still running when branch 0 is told to write its outcome
				case <-store.failed:
				case <-bc.Done():
				}
				return []byte{1}, nil
			},
		}}
		_, err := ctx.Parallel(spec)
		return nil, err
	}
	done := make(chan Outcome, 1)
	go func() {
		done <- firstRun(store, h)
	}()
	select {
	case out := <-done:
		require.Equal(t, Aborted, out.Kind)
		require.ErrorContains(t, out.Cause, "store unreachable")
	case <-time.After(10 * time.Second):
		t.Fatal("the invocation hung")
	}
	_, err := store.Get(context.Background(), messages.CheckpointKey("x", "1"))
	require.ErrorIs(t, err, kvstore.ErrNotFound, "the batch did not complete")
}

// The worker stopping while a branch of an inline batch waits for the runner's answer, with no
// other branch running (the other waits), ends the invocation: the runner is never left waiting
// for a branch that gave up (found by the soak test).
func TestAnInlineBatchEndsWhenTheWorkerStopsMidWay(t *testing.T) {
	h := func(ctx *Context, _ []byte) ([]byte, error) {
		spec := BatchSpec{Name: "p", Config: messages.BatchConfig{N: 2}, Placement: PlaceInline, Branches: []BranchFunc{
			func(*Context) ([]byte, error) { return []byte{0}, nil },
			func(bc *Context) ([]byte, error) { return []byte{1}, bc.Wait("w", time.Hour) },
		}}
		_, err := ctx.Parallel(spec)
		return nil, err
	}
	for i := range 50 {
		store := &memStore{m: map[string]kvstore.Entry{}}
		ctx, stop := context.WithCancel(context.Background())
		hook := func() { stop() }
		testHookAwaitingVerdict.Store(&hook)
		done := make(chan Outcome, 1)
		go func() {
			done <- NewInvocation(ctx, Config{ExecutionID: "x", Store: store, FirstRun: true}, nil).Run(ctx, h, nil)
		}()
		select {
		case out := <-done:
			require.Contains(t, []OutcomeKind{Aborted, Suspended}, out.Kind, "%v %v", out.Error, out.Cause)
		case <-time.After(10 * time.Second):
			t.Fatalf("run %d: the invocation hung after the worker stopped", i)
		}
	}
	testHookAwaitingVerdict.Store(nil)
}

// A branch abandoned while it runs an inline batch of its own: the inner batch records nothing
// (neither its branches' outcomes nor its own record).
func TestAnAbandonedInlineBranchsInnerBatchRecordsNothing(t *testing.T) {
	store := &memStore{m: map[string]kvstore.Entry{}}
	innerStarted := make(chan struct{}, 2)
	blocked := func(bc *Context) ([]byte, error) {
		return bc.Step("blocked", StepOptions{}, func(sc *StepContext) ([]byte, error) {
			innerStarted <- struct{}{}
			<-sc.Done()
			return []byte{0xc0}, nil
		})
	}
	one := 1
	h := succeededOf(BatchSpec{Name: "outer", Config: messages.BatchConfig{N: 2, MinSuccessful: &one}, Placement: PlaceInline, Branches: []BranchFunc{
		func(*Context) ([]byte, error) {
			<-innerStarted // both inner branches are under way
			<-innerStarted
			return []byte{0}, nil
		},
		func(bc *Context) ([]byte, error) {
			_, err := bc.Parallel(BatchSpec{Name: "inner", Config: messages.BatchConfig{N: 2}, Placement: PlaceInline,
				Branches: []BranchFunc{blocked, blocked}})
			return []byte{1}, err
		},
	}})
	out := firstRun(store, h)
	require.Equal(t, Completed, out.Kind, out.Error)
	require.Equal(t, []byte{1}, out.Result)
	// The abandoned branch's goroutines finish on their own; give them the time to write, if
	// they were to.
	require.Never(t, func() bool {
		store.mu.Lock()
		defer store.mu.Unlock()
		for key := range store.m {
			if strings.HasPrefix(key, "x.1-2-") {
				return true
			}
		}
		return false
	}, 200*time.Millisecond, 5*time.Millisecond, "a record of the abandoned branch's inner batch")
}

// Given only its operations' records (Config.Outcomes), an invocation reads a batch's branch
// outcomes once, when it meets the batch: a completed batch on the fleet to rebuild its result,
// and an inline batch to resume it.
func TestBranchOutcomesAreReadOncePerBatchWhenLeftOut(t *testing.T) {
	store := &memStore{m: map[string]kvstore.Entry{}}
	fleet := &messages.Checkpoint{OpID: "1", OpKind: messages.OpParallel, Name: "fleet", Status: messages.OpSucceeded,
		Batch: &messages.BatchConfig{N: 3}, Summary: &messages.BatchSummary{Reason: messages.ReasonAllCompleted, Started: 3, Succeeded: 3, Done: []byte{7}}}
	inline := &messages.Checkpoint{OpID: "2", OpKind: messages.OpParallel, Name: "inline", Status: messages.OpStarted,
		Batch: &messages.BatchConfig{N: 2, Inline: true}}
	outcomes := map[string][]Loaded{"2": {{Revision: 9, Checkpoint: &messages.Checkpoint{OpID: messages.InlineRecordID("2", 0),
		OpKind: messages.OpBranch, Status: messages.OpSucceeded, Result: []byte{0xa1, 'i'}}}}}
	for i := range 3 {
		outcomes["1"] = append(outcomes["1"], Loaded{Revision: uint64(i + 1), Checkpoint: &messages.Checkpoint{OpID: messages.BranchRecordID("x", "1", i),
			OpKind: messages.OpBranch, Status: messages.OpSucceeded, Result: []byte{byte(i)}}})
	}
	require.NoError(t, store.putRecord(fleet))
	require.NoError(t, store.putRecord(inline))
	var mu sync.Mutex
	reads := map[string]int{}
	var runs atomic.Int32
	h := func(ctx *Context, _ []byte) ([]byte, error) {
		spec := BatchSpec{Name: "fleet", Config: messages.BatchConfig{N: 3}, Placement: PlaceFleet}
		for range 3 {
			spec.Branches = append(spec.Branches, func(*Context) ([]byte, error) { panic("a branch of a completed batch ran") })
		}
		out, err := ctx.Parallel(spec)
		if err != nil {
			return nil, err
		}
		var got []byte
		for i := range 3 {
			got = append(got, out.Branch(i).Result...)
		}
		spec = BatchSpec{Name: "inline", Config: messages.BatchConfig{N: 2}, Placement: PlaceInline}
		for range 2 {
			spec.Branches = append(spec.Branches, func(*Context) ([]byte, error) { runs.Add(1); return []byte{0xc0}, nil })
		}
		out, err = ctx.Parallel(spec)
		if err != nil {
			return nil, err
		}
		return append(got, byte(out.Summary.Succeeded)), nil
	}
	inv := NewInvocation(context.Background(), Config{ExecutionID: "x", Store: store, Listed: true,
		Outcomes: func(_ context.Context, cp *messages.Checkpoint) ([]Loaded, error) {
			mu.Lock()
			defer mu.Unlock()
			reads[cp.OpID]++
			return outcomes[cp.OpID], nil
		}}, []Loaded{{Checkpoint: fleet, Revision: 1}, {Checkpoint: inline, Revision: 1}})
	out := inv.Run(context.Background(), h, nil)
	require.Equal(t, Completed, out.Kind, "%v %v", out.Error, out.Cause)
	require.Equal(t, []byte{0, 1, 2, 2}, out.Result)
	require.Equal(t, map[string]int{"1": 1, "2": 1}, reads)
	require.EqualValues(t, 1, runs.Load(), "the inline branch recorded before ran again")
}
