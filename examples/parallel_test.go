package examples_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/durable"
	"github.com/jetflow/jetflow/durabletest"
	"github.com/jetflow/jetflow/examples"
)

func TestBatchExamples(t *testing.T) {
	env := durabletest.New(t)
	durabletest.Register(env, examples.CheckServicesFunction, examples.CheckServices)
	durabletest.Register(env, examples.RaceFunction, examples.Race)
	durabletest.Register(env, examples.TolerantFunction, examples.Tolerant)
	durabletest.Register(env, examples.NestedFunction, examples.Nested)
	durabletest.Register(env, examples.MapFunction, examples.MapOrders)

	checks, err := durabletest.Run[durable.BatchResult[string]](env, examples.CheckServicesFunction, "A-9")
	require.NoError(t, err)
	require.Equal(t, []string{"inventory ok for A-9", "payment ok for A-9", "shipping ok for A-9"}, checks.Results())

	race, err := durabletest.Run[durable.BatchResult[string]](env, examples.RaceFunction, "f")
	require.NoError(t, err)
	require.Equal(t, durable.CompletionMinSuccessfulReached, race.Reason)
	require.Equal(t, []string{"f from us-mirror in 20ms"}, race.Results())
	require.Equal(t, 2, race.StartedCount())

	tolerant, err := durabletest.Run[durable.BatchResult[string]](env, examples.TolerantFunction, "hi")
	require.NoError(t, err)
	require.Equal(t, durable.CompletionAllCompleted, tolerant.Reason)
	require.Equal(t, durable.BatchItemFailed, tolerant.Status())
	require.Equal(t, "pager", tolerant.Failed()[0].Name)
	var se *durable.StepError
	require.ErrorAs(t, tolerant.ThrowIfError(), &se)
	require.Equal(t, "pager gateway unreachable", se.Message)

	nested, err := durabletest.Run[durable.BatchResult[[]string]](env, examples.NestedFunction, "")
	require.NoError(t, err)
	require.Equal(t, [][]string{{"eu/api up", "eu/db up"}, {"us/api up", "us/db up"}, {"ap/api up", "ap/db up"}}, nested.Results())

	priced, err := durabletest.Run[durable.BatchResult[int]](env, examples.MapFunction, []examples.Order{
		{ID: "x", Items: []examples.Item{{Quantity: 2, Cents: 5}}}, {ID: "y"},
	})
	require.NoError(t, err)
	require.Equal(t, []int{10, 0}, priced.Results())
	b, err := json.Marshal(priced)
	require.NoError(t, err)
	require.JSONEq(t, `{"all":[{"index":0,"name":"x","status":"SUCCEEDED","result":10},{"index":1,"name":"y","status":"SUCCEEDED","result":0}],
		"completionReason":"ALL_COMPLETED","status":"SUCCEEDED","successCount":2,"failureCount":0,"startedCount":0,"totalCount":2}`, string(b))
}
