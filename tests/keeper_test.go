package tests

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/durable"
	"github.com/jetflow/jetflow/durabletest"
	"github.com/jetflow/jetflow/messages"
)

// While a coordinator handles events it keeps a message that expires in each work-queue stream,
// so that acking a stream's last task or event does not replace the stream's last file. No
// consumer takes it: after an execution nothing is pending or delivered.
func TestCoordinatorKeepsAMessageInEachWorkQueue(t *testing.T) {
	env := durabletest.New(t)
	durabletest.Register(env, "kept", func(ctx durable.Context, in int) (int, error) {
		return durable.Step(ctx, "double", func(durable.StepContext) (int, error) { return 2 * in, nil })
	})
	out, err := durabletest.Run[int](env, "kept", 21)
	require.NoError(t, err)
	require.Equal(t, 42, out)

	ctx, cancel := context.WithTimeout(context.Background(), env.Timeout())
	defer cancel()
	js, err := jetstream.New(env.Conn())
	require.NoError(t, err)
	for stream, subject := range map[string]string{
		messages.TaskStream:  messages.TaskKeeperSubject,
		messages.EventStream: messages.EventKeeperSubject,
	} {
		st, err := js.Stream(ctx, stream)
		require.NoError(t, err)
		require.True(t, st.CachedInfo().Config.AllowMsgTTL, "%s lets messages expire", stream)
		m, err := st.GetLastMsgForSubject(ctx, subject)
		require.NoError(t, err, "a keeper in %s", stream)
		require.Equal(t, "30s", m.Header.Get(jetstream.MsgTTLHeader), "the keeper in %s expires", stream)
	}
	task, err := js.Consumer(ctx, messages.TaskStream, messages.ConsumerName("kept"))
	require.NoError(t, err)
	info, err := task.Info(ctx)
	require.NoError(t, err)
	require.Zero(t, info.NumPending, "no keeper waits for the worker")
	require.Zero(t, info.NumAckPending, "no keeper was delivered to the worker")
	require.EqualValues(t, 1, info.Delivered.Consumer, "the worker was given the one task, nothing else")
}
