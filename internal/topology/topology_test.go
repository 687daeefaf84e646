package topology_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/durabletest"
	"github.com/jetflow/jetflow/internal/topology"
	"github.com/jetflow/jetflow/messages"
)

// A work-queue stream made by an earlier version, without message TTLs, is given them, and
// keeps its messages.
func TestProvisionLetsAnEarlierStreamsMessagesExpire(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, err := jetstream.New(durabletest.NATS(t))
	require.NoError(t, err)
	for name, subjects := range map[string]string{messages.TaskStream: messages.TaskSubjects, messages.EventStream: messages.EventSubjects} {
		_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subjects},
			Retention: jetstream.WorkQueuePolicy, Duplicates: 2 * time.Minute})
		require.NoError(t, err)
	}
	_, err = js.Publish(ctx, messages.TaskSubject("f", "x1"), []byte("queued"))
	require.NoError(t, err)
	allowed, err := topology.AllowMsgTTL(ctx, js)
	require.NoError(t, err)
	require.False(t, allowed, "the earlier streams do not let messages expire")

	require.NoError(t, topology.Provision(ctx, js, topology.Options{}))
	allowed, err = topology.AllowMsgTTL(ctx, js)
	require.NoError(t, err)
	require.True(t, allowed, "provisioned streams let messages expire")
	for _, name := range []string{messages.TaskStream, messages.EventStream} {
		st, err := js.Stream(ctx, name)
		require.NoError(t, err)
		require.True(t, st.CachedInfo().Config.AllowMsgTTL, name)
		require.Equal(t, jetstream.WorkQueuePolicy, st.CachedInfo().Config.Retention, name)
	}
	st, err := js.Stream(ctx, messages.TaskStream)
	require.NoError(t, err)
	require.EqualValues(t, 1, st.CachedInfo().State.Msgs, "the queued task is still there")
}
