package tests

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/durabletest"
	"github.com/jetflow/jetflow/messages"
)

// On a 3-node cluster with every stream and bucket replicated 3 times, the node that leads the
// checkpoint bucket is stopped in the middle of a batch and later brought back: the batch
// completes with the result of an undisturbed run.
func TestClusterSurvivesANodeLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("a 3-node cluster takes seconds to form")
	}
	env := durabletest.New(t, durabletest.WithCluster(3), durabletest.WithWorkers(2), durabletest.WithLogger(testLogger()))
	l := newStepLedger(env)
	durabletest.Register(env, "squares", batchHandler(l))
	ctx, cancel := context.WithTimeout(context.Background(), env.Timeout())
	defer cancel()

	js, err := jetstream.New(env.Conn())
	require.NoError(t, err)
	st, err := js.Stream(ctx, messages.CheckpointStream)
	require.NoError(t, err)
	require.Equal(t, 3, st.CachedInfo().Config.Replicas, "the checkpoint bucket is replicated")

	id, err := env.Client().Start(ctx, "squares", "")
	require.NoError(t, err)
	select {
	case <-l.started:
	case <-ctx.Done():
		t.Fatal("the batch never got going")
	}
	info, err := st.Info(ctx)
	require.NoError(t, err)
	leader := env.Cluster().NodeIndex(info.Cluster.Leader)
	require.GreaterOrEqual(t, leader, 0, "leader %q", info.Cluster.Leader)
	env.Cluster().StopNode(leader)

	var got string
	if err := env.Client().Result(ctx, id, &got); err != nil {
		dump(t, js, id)
		t.Fatal(err)
	}
	var res struct {
		SuccessCount, FailureCount, TotalCount int
	}
	require.NoError(t, json.Unmarshal([]byte(got), &res))
	require.Equal(t, 51, res.SuccessCount)
	require.Equal(t, 9, res.FailureCount)
	require.Empty(t, l.rerun, "step bodies that ran again after their checkpoint")

	require.NoError(t, env.Cluster().StartNode(leader))
	got2, err := durabletest.Run[string](env, "squares", "")
	require.NoError(t, err)
	require.JSONEq(t, got, got2, "a run after the node came back gives the same result")
}

func dump(t *testing.T, js jetstream.JetStream, id string) {
	ctx := context.Background()
	for _, stream := range []string{messages.EventStream, messages.TaskStream, messages.CheckpointStream} {
		st, err := js.Stream(ctx, stream)
		if err != nil {
			t.Logf("stream %s: %v", stream, err)
			continue
		}
		si, _ := st.Info(ctx)
		t.Logf("stream %s: msgs=%d leader=%s", stream, si.State.Msgs, si.Cluster.Leader)
		for name := range st.ConsumerNames(ctx).Name() {
			cons, err := st.Consumer(ctx, name)
			if err != nil {
				t.Logf("  consumer %s: %v", name, err)
				continue
			}
			info, err := cons.Info(ctx)
			if err != nil {
				t.Logf("  consumer %s: %v", name, err)
				continue
			}
			if info.NumPending+uint64(info.NumAckPending)+uint64(info.NumRedelivered) > 0 {
				t.Logf("  consumer %s: pending=%d ackpending=%d redelivered=%d waiting=%d leader=%s", name, info.NumPending, info.NumAckPending, info.NumRedelivered, info.NumWaiting, info.Cluster.Leader)
			}
		}
	}
	kv, _ := js.KeyValue(ctx, messages.BatchBucket)
	if e, err := kv.Get(ctx, id+".1"); err == nil {
		b, err := messages.DecodeAs[*messages.Batch](e.Value()[1:])
		t.Logf("batch: %+v %v", b, err)
	}
}
