package engine

import (
	"context"
	"strconv"
	"testing"

	"github.com/jetflow/jetflow/kvstore"
	"github.com/jetflow/jetflow/messages"
)

// memStore is an in-memory Store for the engine's own benchmarks (the real store is tested with
// JetStream in kvstore and end to end).
type memStore struct{ m map[string]kvstore.Entry }

func (s *memStore) Get(_ context.Context, key string) (kvstore.Entry, error) {
	e, ok := s.m[key]
	if !ok {
		return kvstore.Entry{}, kvstore.ErrNotFound
	}
	return e, nil
}

func (s *memStore) Create(_ context.Context, key string, value []byte) (uint64, error) {
	if _, ok := s.m[key]; ok {
		return 0, kvstore.ErrConflict
	}
	s.m[key] = kvstore.Entry{Key: key, Value: value, Revision: 1}
	return 1, nil
}

func (s *memStore) Update(_ context.Context, key string, value []byte, rev uint64) (uint64, error) {
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
