package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/client"
	"github.com/jetflow/jetflow/durable"
	"github.com/jetflow/jetflow/durabletest"
	"github.com/jetflow/jetflow/examples"
)

// cli runs the jetflow command with args against env and returns its output and exit code.
func cli(t *testing.T, env *durabletest.Env, args ...string) (string, int) {
	t.Helper()
	var out bytes.Buffer
	root := newRoot()
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(append(args, "--nats", env.URL()))
	err := root.ExecuteContext(context.Background())
	if err != nil {
		out.WriteString("error: " + err.Error() + "\n")
	}
	return out.String(), exitCode(err)
}

// gate holds every branch that enters it until it is opened or its context is cancelled.
type gate struct {
	mu      sync.Mutex
	entered int
	open    chan struct{}
}

func (g *gate) pass(ctx context.Context) error {
	g.mu.Lock()
	g.entered++
	g.mu.Unlock()
	select {
	case <-g.open:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *gate) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.entered
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	require.Eventually(t, cond, 30*time.Second, 10*time.Millisecond, "waiting for %s", what)
}

func TestListWatchCancel(t *testing.T) {
	env := durabletest.New(t, durabletest.WithWorkers(2))
	durabletest.Register(env, examples.FanOutFunction, examples.FanOut)
	g := &gate{open: make(chan struct{})}
	durabletest.Register(env, "gated", func(ctx durable.Context, n int) (int, error) {
		branches := make([]durable.Branch[int], n)
		for i := range branches {
			branches[i] = durable.Branch[int]{Func: func(ctx durable.Context) (int, error) {
				return durable.Step(ctx, "pass", func(sc durable.StepContext) (int, error) { return i, g.pass(sc) })
			}}
		}
		res, err := durable.Parallel(ctx, "gated", branches, durable.WithMaxConcurrency(5))
		if err != nil {
			return 0, err
		}
		return res.SuccessCount(), nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), env.Timeout())
	defer cancel()
	cl := env.Client()

	// A finished fan-out, watched after the fact: its bar is full.
	out, code := cli(t, env, "start", examples.FanOutFunction, `{"n": 200, "failEvery": 50}`, "--name", "wide-1", "--wait")
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "196")
	out, code = cli(t, env, "watch", "wide-1")
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "200/200 done  4 failed  0 in flight  ALL_COMPLETED")
	require.Contains(t, out, "execution SUCCEEDED")

	// A running one: watch shows it in flight, list shows it RUNNING, cancel ends it.
	id, err := cl.Start(ctx, "gated", 50, client.WithExecutionName("gated-1"))
	require.NoError(t, err)
	waitFor(t, func() bool { return g.count() == 5 }, "the first window")

	var watchOut string
	var watchCode int
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		watchOut, watchCode = cli(t, env, "watch", id)
	}()

	out, code = cli(t, env, "list", "--status", "running")
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "gated-1")
	require.NotContains(t, out, "wide-1")
	out, code = cli(t, env, "list", "--json", "--limit", "-1")
	require.Equal(t, 0, code, out)
	var listed []client.Summary
	require.NoError(t, json.Unmarshal([]byte(out), &listed))
	require.Len(t, listed, 2)
	require.Equal(t, "gated-1", listed[0].ID, "the most recent first")
	out, code = cli(t, env, "list", "--status", "sleeping")
	require.Equal(t, exitUsage, code, out)

	out, code = cli(t, env, "cancel", id, "--reason", "test over")
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "cancelled "+id)
	<-watched
	require.Equal(t, exitFailed, watchCode, watchOut)
	require.Contains(t, watchOut, "0/50 done  0 failed  5 in flight")
	require.Contains(t, watchOut, "execution CANCELLED")
	require.Contains(t, watchOut, "Cancelled: test over")

	out, code = cli(t, env, "cancel", id)
	require.Equal(t, exitEnded, code, out)
	out, code = cli(t, env, "cancel", "no-such-one")
	require.Equal(t, exitNotFound, code, out)
	out, code = cli(t, env, "result", id)
	require.Equal(t, exitFailed, code, out)
	require.Contains(t, out, "was cancelled")
	out, code = cli(t, env, "describe", id)
	require.Equal(t, 0, code, out)
	require.True(t, strings.HasPrefix(out, "execution gated-1  gated  CANCELLED"), out)
	close(g.open)
}
