package tests

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/jetflow/jetflow/durable"
	"github.com/jetflow/jetflow/durabletest"
	"github.com/jetflow/jetflow/messages"
)

// Garbage on every jetflow subject is dropped (not redelivered forever), and executions beside
// it finish.
func TestMalformedMessagesAreDroppedAndServiceCarriesOn(t *testing.T) {
	env := durabletest.New(t)
	durabletest.Register(env, "echo", func(ctx durable.Context, s string) (string, error) {
		return durable.Step(ctx, "echo", func(durable.StepContext) (string, error) { return s, nil })
	})
	// Make sure the function's consumer exists before garbage reaches its subject.
	got, err := durabletest.Run[string](env, "echo", "warm")
	require.NoError(t, err)
	require.Equal(t, "warm", got)

	js, err := jetstream.New(env.Conn())
	require.NoError(t, err)
	ctx := context.Background()
	future, _ := msgpack.Marshal(map[string]any{"v": messages.ProtocolVersion + 1, "k": uint8(messages.KindStartExecution)})
	unknown, _ := msgpack.Marshal(map[string]any{"v": messages.ProtocolVersion, "k": 99})
	wrongKind := messages.MustEncode(&messages.RunTask{ExecutionID: "x", Function: "echo", TaskID: "start"})
	badStart := messages.MustEncode(&messages.StartExecution{ExecutionID: "bad id!", Function: "echo"})
	orphanEnd := messages.MustEncode(&messages.InvocationEnded{ExecutionID: "nobody", TaskID: "start", Outcome: messages.OutcomeCompleted})
	orphanTask := messages.MustEncode(&messages.RunTask{ExecutionID: "nobody", Function: "echo", TaskID: "start"})
	for _, m := range []struct {
		subject string
		data    []byte
	}{
		{messages.EventSubject("x", "start"), []byte("garbage")},
		{messages.EventSubject("x", "start"), nil},
		{messages.EventSubject("x", "start"), future},
		{messages.EventSubject("x", "end"), unknown},
		{messages.EventSubject("x", "end"), wrongKind},
		{messages.EventSubject("x", "start"), badStart},
		{messages.EventSubject("nobody", "end"), orphanEnd},
		{messages.TaskSubject("echo", "x"), []byte{0xc1}},
		{messages.TaskSubject("echo", "nobody"), orphanTask},
		{messages.TimerSubject("x", "1"), []byte("not a timer")},
		{messages.EventSubject("nobody", "start"), messages.MustEncode(&messages.StartExecution{ExecutionID: "nobody", Function: "no-worker-has-this"})},
		{"$KV." + messages.CheckpointBucket + ".nobody.1.0." + strconv.Itoa(messages.Partition("nobody")), []byte("not an outcome")},
	} {
		_, err := js.Publish(ctx, m.subject, m.data)
		require.NoError(t, err)
	}
	// Core NATS: a garbage abandon notice, and a payload over the server's limit (refused at once).
	require.NoError(t, env.Conn().Publish(messages.AbandonSubject("x"), []byte("garbage")))
	_, err = js.Publish(ctx, messages.EventSubject("x", "start"), make([]byte, 2<<20))
	require.Error(t, err, "an oversized payload is refused")

	got, err = durabletest.Run[string](env, "echo", "after the garbage")
	require.NoError(t, err)
	require.Equal(t, "after the garbage", got)

	// Every bad message was terminated: nothing is left pending on any consumer (the start for a
	// function no worker has waits in the task stream with no consumer, as documented).
	requireNothingPending(t, env, messages.EventStream, messages.TaskStream, messages.CheckpointStream)
}

// A start that claims a freshly generated id (NewID) for an execution that exists is read
// against the stored state once its state write conflicts: the execution is not started again,
// and its first task, already sent, is the same message as before (deduplicated by its id).
func TestAStartClaimingANewIDOfAnExistingExecutionChangesNothing(t *testing.T) {
	env := durabletest.New(t)
	var runs atomic.Int32
	durabletest.Register(env, "once", func(ctx durable.Context, s string) (string, error) {
		return durable.Step(ctx, "count", func(durable.StepContext) (string, error) { runs.Add(1); return s, nil })
	})
	ctx, cancel := context.WithTimeout(context.Background(), env.Timeout())
	defer cancel()
	id, err := env.Client().Start(ctx, "once", "first")
	require.NoError(t, err)
	var got string
	require.NoError(t, env.Client().Result(ctx, id, &got))
	require.Equal(t, "first", got)

	js, err := jetstream.New(env.Conn())
	require.NoError(t, err)
	in, err := msgpack.Marshal("second")
	require.NoError(t, err)
	again := messages.MustEncode(&messages.StartExecution{ExecutionID: id, Function: "once", Input: in, NewID: true})
	// Another message id than the client's, so that the stream stores it.
	_, err = js.Publish(ctx, messages.EventSubject(id, "start"), again, jetstream.WithMsgID("replayed-start"))
	require.NoError(t, err)
	requireNothingPending(t, env, messages.EventStream, messages.TaskStream)
	require.NoError(t, env.Client().Result(ctx, id, &got))
	require.Equal(t, "first", got)
	require.EqualValues(t, 1, runs.Load(), "the step ran again")
}
