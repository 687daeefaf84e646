package engine

import (
	"context"
	"strconv"
	"sync"
	"testing"

	"github.com/jetflow/jetflow/kvstore"
	"github.com/jetflow/jetflow/messages"
)

// memStore is an in-memory Store for the engine's own benchmarks (the real store is tested with
// JetStream in kvstore and end to end).
type memStore struct {
	mu sync.Mutex
	m  map[string]kvstore.Entry
}

func (s *memStore) Get(_ context.Context, key string) (kvstore.Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[key]
	if !ok {
		return kvstore.Entry{}, kvstore.ErrNotFound
	}
	return e, nil
}

func (s *memStore) Create(_ context.Context, key string, value []byte) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[key]; ok {
		return 0, kvstore.ErrConflict
	}
	s.m[key] = kvstore.Entry{Key: key, Value: value, Revision: 1}
	return 1, nil
}

func (s *memStore) Update(_ context.Context, key string, value []byte, rev uint64) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m[key].Revision != rev {
		return 0, kvstore.ErrConflict
	}
	s.m[key] = kvstore.Entry{Key: key, Value: value, Revision: rev + 1}
	return rev + 1, nil
}

// BenchmarkReplay1000 replays a handler of 1,000 steps over their 1,000 checkpoints: the cost of
// resuming a long execution.
func BenchmarkReplay1000(b *testing.B) {
	loaded := make([]Loaded, 1000)
	for i := range loaded {
		loaded[i] = Loaded{Revision: 1, Checkpoint: &messages.Checkpoint{OpID: strconv.Itoa(i + 1), OpKind: messages.OpStep,
			Name: "s", Status: messages.OpSucceeded, Result: []byte{0xa1, 'x'}}}
	}
	h := func(ctx *Context, _ []byte) ([]byte, error) {
		for range 1000 {
			if _, err := ctx.Step("s", StepOptions{}, func(*StepContext) ([]byte, error) {
				panic("a checkpointed step ran")
			}); err != nil {
				return nil, err
			}
		}
		return nil, nil
	}
	for b.Loop() {
		inv := NewInvocation(context.Background(), Config{ExecutionID: "x", Store: &memStore{m: map[string]kvstore.Entry{}}}, loaded)
		if out := inv.Run(context.Background(), h, nil); out.Kind != Completed {
			b.Fatalf("outcome %v %v", out.Kind, out.Error)
		}
	}
}

func TestReplayReturnsCheckpointsWithoutRunning(t *testing.T) {
	store := &memStore{m: map[string]kvstore.Entry{}}
	runs := 0
	h := func(ctx *Context, _ []byte) ([]byte, error) {
		return ctx.Step("s", StepOptions{}, func(*StepContext) ([]byte, error) { runs++; return []byte{0xa1, 'y'}, nil })
	}
	first := NewInvocation(context.Background(), Config{ExecutionID: "x", Store: store}, nil).Run(context.Background(), h, nil)
	if first.Kind != Completed || runs != 1 {
		t.Fatalf("first run: %v, %d runs", first.Kind, runs)
	}
	e := store.m[messages.CheckpointKey("x", "1")]
	cp, err := messages.DecodeAs[*messages.Checkpoint](e.Value)
	if err != nil {
		t.Fatal(err)
	}
	again := NewInvocation(context.Background(), Config{ExecutionID: "x", Store: store}, []Loaded{{Checkpoint: cp, Revision: e.Revision}}).
		Run(context.Background(), h, nil)
	if again.Kind != Completed || runs != 1 || string(again.Result) != string(first.Result) {
		t.Fatalf("replay: %v, %d runs, %q vs %q", again.Kind, runs, again.Result, first.Result)
	}
}

// countingStore counts reads and writes.
type countingStore struct {
	memStore
	gets, writes int // under memStore.mu
}

func (s *countingStore) Get(ctx context.Context, key string) (kvstore.Entry, error) {
	s.mu.Lock()
	s.gets++
	s.mu.Unlock()
	return s.memStore.Get(ctx, key)
}

func (s *countingStore) Create(ctx context.Context, key string, value []byte) (uint64, error) {
	s.mu.Lock()
	s.writes++
	s.mu.Unlock()
	return s.memStore.Create(ctx, key, value)
}

// batchHandler opens a batch of two branches and returns how many succeeded.
func batchHandler(ctx *Context, _ []byte) ([]byte, error) {
	one := func(*Context) ([]byte, error) { return []byte{0x01}, nil }
	out, err := ctx.Parallel(BatchSpec{Name: "b", Config: messages.BatchConfig{N: 2}, Branches: []BranchFunc{one, one}})
	if err != nil {
		return nil, err
	}
	return []byte{byte(out.Summary.Succeeded)}, nil
}

// The invocation that opens a batch does not store its record: the request carries it, unstored
// (revision 0), for the coordinator to create with the batch's state. An execution's first run
// does not read it first either.
func TestOpeningABatchLeavesItsRecordToTheCoordinator(t *testing.T) {
	store := &countingStore{memStore: memStore{m: map[string]kvstore.Entry{}}}
	out := NewInvocation(context.Background(), Config{ExecutionID: "x", Store: store, Listed: true, FirstRun: true}, nil).
		Run(context.Background(), batchHandler, nil)
	if out.Kind != Suspended || len(out.Parallels) != 1 {
		t.Fatalf("outcome %v, %d requests", out.Kind, len(out.Parallels))
	}
	req := out.Parallels[0]
	if req.Checkpoint == nil || req.Checkpoint.OpID != "1" || req.Checkpoint.Status != messages.OpStarted || req.Revision != 0 {
		t.Fatalf("request carries %+v at revision %d", req.Checkpoint, req.Revision)
	}
	if store.gets != 0 || store.writes != 0 {
		t.Fatalf("%d reads and %d writes; want none", store.gets, store.writes)
	}
}

// An invocation that is not an execution's first run reads a batch's record before asking for
// the batch: a completed one (here, as a resumed branch or a replay would meet it) returns its
// outcome instead of asking again.
func TestAReplayReadsTheBatchRecordBeforeAskingAgain(t *testing.T) {
	store := &countingStore{memStore: memStore{m: map[string]kvstore.Entry{}}}
	done := &messages.Checkpoint{OpID: "1", OpKind: messages.OpParallel, Name: "b", Status: messages.OpSucceeded,
		Batch: &messages.BatchConfig{N: 2}, Summary: &messages.BatchSummary{Started: 2, Succeeded: 2, Done: []byte{3}}}
	store.m[messages.CheckpointKey("x", "1")] = kvstore.Entry{Value: messages.MustEncode(done), Revision: 4}
	out := NewInvocation(context.Background(), Config{ExecutionID: "x", Store: store, Listed: true}, nil).
		Run(context.Background(), batchHandler, nil)
	if out.Kind != Completed || len(out.Result) != 1 || out.Result[0] != 2 {
		t.Fatalf("outcome %v %v %v", out.Kind, out.Result, out.Error)
	}
	if store.gets == 0 {
		t.Fatal("the batch's record was not read")
	}
}

// BenchmarkBranchRun runs one branch of a batch the worker knows (a one-step branch, its outcome
// left to the caller): the engine's share of every branch of a wide Parallel.
func BenchmarkBranchRun(b *testing.B) {
	step := func(ctx *Context) ([]byte, error) {
		return ctx.Step("work", StepOptions{}, func(*StepContext) ([]byte, error) { return []byte("0123456789abcdefghij"), nil })
	}
	cached := &CachedBatch{Branches: []BranchFunc{step, step}, Names: []string{"a", "b"}}
	store := &memStore{m: map[string]kvstore.Entry{}}
	for b.Loop() {
		inv := NewInvocation(context.Background(), Config{ExecutionID: "x", Store: store, DeferOutcome: true,
			Path: []messages.BranchRef{{OpID: "1", Index: 1}}}, nil)
		if out := inv.RunCached(context.Background(), cached); out.Kind != BranchDone || out.Record == nil {
			b.Fatalf("outcome %v", out.Kind)
		}
	}
}
