package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/durable"
	"github.com/jetflow/jetflow/durabletest"
	"github.com/jetflow/jetflow/messages"
)

// rolledHandler maps 300 items on the fleet (every seventh fails), waits, and returns the
// result as rebuilt by the run after the wait.
func rolledHandler(ctx durable.Context, _ string) (string, error) {
	items := make([]int, 300)
	for i := range items {
		items[i] = i
	}
	res, err := durable.Map(ctx, "squares", items, func(ctx durable.Context, item, _ int) (int, error) {
		if item%7 == 3 {
			return 0, fmt.Errorf("no %d", item)
		}
		return durable.Step(ctx, "square", func(durable.StepContext) (int, error) { return item * item, nil })
	}, durable.WithPlacement(durable.PlacementFleet), durable.WithCompletion(durable.AllCompleted()))
	if err != nil {
		return "", err
	}
	if err := durable.Wait(ctx, "pause", time.Second); err != nil {
		return "", err
	}
	b, err := json.Marshal(res)
	return string(b), err
}

// A large batch's coordinator gathers its outcomes into a rollup, and the code the batch resumes
// rebuilds the result from it. A rollup that does not match the batch's summary is not trusted:
// the branch records are read instead, and the result is the same.
func TestALargeBatchIsRebuiltFromItsRollup(t *testing.T) {
	logs := &recordedLogs{}
	env := durabletest.New(t, durabletest.WithLogger(slog.New(logs)))
	durabletest.Register(env, "rolled", rolledHandler)
	ctx, cancel := context.WithTimeout(context.Background(), env.Timeout())
	defer cancel()
	js, err := jetstream.New(env.Conn())
	require.NoError(t, err)
	ckpts, err := js.KeyValue(ctx, messages.CheckpointBucket)
	require.NoError(t, err)
	batches, err := js.KeyValue(ctx, messages.BatchBucket)
	require.NoError(t, err)
	// summaryOf waits for the batch (the handler's first operation) to complete.
	summaryOf := func(id string) *messages.BatchSummary {
		var s *messages.BatchSummary
		eventually(t, func() bool {
			e, err := ckpts.Get(ctx, id+".1")
			if err != nil {
				return false
			}
			cp, err := messages.DecodeAs[*messages.Checkpoint](e.Value()[1:]) // kvstore's frame byte first
			require.NoError(t, err)
			s = cp.Summary
			return s != nil
		}, "the batch completes")
		return s
	}
	const warning = "its rollup is unreadable"

	id, err := env.Client().Start(ctx, "rolled", "")
	require.NoError(t, err)
	s := summaryOf(id)
	require.Positive(t, s.Rollup, "the batch's record names no rollup")
	var want string
	require.NoError(t, env.Client().Result(ctx, id, &want))
	require.False(t, logs.has(warning), "a whole rollup was refused")
	var res durable.BatchResult[int]
	require.NoError(t, json.Unmarshal([]byte(want), &res))
	require.Len(t, res.Items, 300)
	require.Equal(t, 257, res.SuccessCount())

	// The next execution's rollup loses an entry while the handler waits: the run after the
	// wait must notice, and read the branch records.
	id, err = env.Client().Start(ctx, "rolled", "")
	require.NoError(t, err)
	s = summaryOf(id)
	require.Positive(t, s.Rollup)
	e, err := batches.Get(ctx, messages.RollupKey(id, "1", 0))
	require.NoError(t, err)
	part, err := messages.DecodeAs[*messages.Rollup](e.Value()[1:])
	require.NoError(t, err)
	var short []byte
	n := 0
	require.NoError(t, part.Each(func(rev uint64, record []byte) error {
		if n++; n > 1 {
			short = messages.AppendRollupEntry(short, rev, record)
		}
		return nil
	}))
	_, err = batches.Put(ctx, messages.RollupKey(id, "1", 0), append([]byte{0}, messages.MustEncode(&messages.Rollup{Count: n - 1, Entries: short})...))
	require.NoError(t, err)
	var got string
	require.NoError(t, env.Client().Result(ctx, id, &got))
	require.JSONEq(t, want, got)
	require.True(t, logs.has(warning), "the rollup short of an entry was trusted")
}

// recordedLogs keeps the messages of every record logged at Warn or above.
type recordedLogs struct {
	mu   sync.Mutex
	msgs []string
}

func (l *recordedLogs) Enabled(_ context.Context, level slog.Level) bool {
	return level >= slog.LevelWarn
}
func (l *recordedLogs) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *recordedLogs) WithGroup(string) slog.Handler      { return l }
func (l *recordedLogs) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, r.Message)
	return nil
}

func (l *recordedLogs) has(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range l.msgs {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}
