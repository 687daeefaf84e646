package durable

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"
)

func sample() BatchResult[int] {
	return BatchResult[int]{Reason: CompletionFailureToleranceExceeded, Items: []BatchItem[int]{
		{Index: 0, Name: "a", Status: BatchItemSucceeded, Result: 0},
		{Index: 1, Name: "b", Status: BatchItemFailed, Err: &StepError{ErrorType: "x.E", Message: "step broke"}},
		{Index: 2, Name: "c", Status: BatchItemFailed, Err: &BranchError{Index: 2, Name: "c", ErrorType: "y.F", Message: "branch broke"}},
		{Index: 3, Name: "d", Status: BatchItemStarted},
		{Index: 4, Name: "e", Status: BatchItemSucceeded, Result: 9},
	}}
}

func TestBatchResultMethods(t *testing.T) {
	r := sample()
	require.Equal(t, []int{0, 9}, r.Results())
	require.Equal(t, 2, r.SuccessCount())
	require.Equal(t, 2, r.FailureCount())
	require.Equal(t, 1, r.StartedCount())
	require.Equal(t, 5, r.TotalCount())
	require.True(t, r.HasFailure())
	require.Equal(t, BatchItemFailed, r.Status())
	require.Len(t, r.Errors(), 2)
	require.Len(t, r.Succeeded(), 2)
	require.Len(t, r.Failed(), 2)
	require.Len(t, r.Started(), 1)
	var se *StepError
	require.True(t, errors.As(r.ThrowIfError(), &se), "the first failure in index order")
	require.Equal(t, "FAILURE_TOLERANCE_EXCEEDED", r.Reason.String())
	require.Equal(t, "STARTED", BatchItemStarted.String())

	var empty BatchResult[string]
	require.NotNil(t, empty.Results())
	require.Empty(t, empty.Results())
	require.NoError(t, empty.ThrowIfError())
	require.Equal(t, BatchItemSucceeded, empty.Status())
}

func TestBatchResultJSONShape(t *testing.T) {
	b, err := json.Marshal(sample())
	require.NoError(t, err)
	require.JSONEq(t, `{"all":[
		{"index":0,"name":"a","status":"SUCCEEDED","result":0},
		{"index":1,"name":"b","status":"FAILED","error":{"errorType":"x.E","errorMessage":"step broke","step":true}},
		{"index":2,"name":"c","status":"FAILED","error":{"errorType":"y.F","errorMessage":"branch broke"}},
		{"index":3,"name":"d","status":"STARTED"},
		{"index":4,"name":"e","status":"SUCCEEDED","result":9}],
		"completionReason":"FAILURE_TOLERANCE_EXCEEDED","status":"FAILED",
		"successCount":2,"failureCount":2,"startedCount":1,"totalCount":5}`, string(b))
	var back BatchResult[int]
	require.NoError(t, json.Unmarshal(b, &back))
	require.Equal(t, sample(), back)
}

func TestBatchResultMsgpackRoundTrip(t *testing.T) {
	b, err := msgpack.Marshal(sample())
	require.NoError(t, err)
	var back BatchResult[int]
	require.NoError(t, msgpack.Unmarshal(b, &back))
	require.Equal(t, sample(), back)
	// Read without the Go type, it is the JSON shape.
	var generic map[string]any
	require.NoError(t, msgpack.Unmarshal(b, &generic))
	require.Equal(t, "FAILED", generic["status"])
	require.Len(t, generic["all"], 5)
}

func TestBatchOptionsValidation(t *testing.T) {
	for _, tc := range []struct {
		opts []BatchOption
		want string
	}{
		{[]BatchOption{WithMaxConcurrency(0)}, "MaxConcurrency must be at least 1"},
		{[]BatchOption{WithCompletion(MinSuccessful(0))}, "MinSuccessful must be at least 1"},
		{[]BatchOption{WithCompletion(ToleratedFailureCount(-1))}, "ToleratedFailureCount must not be negative"},
		{[]BatchOption{WithCompletion(ToleratedFailurePercentage(-0.5))}, "ToleratedFailurePercentage must be between 0 and 100"},
		{[]BatchOption{WithNesting(NestingMode(9))}, "unknown NestingMode"},
	} {
		_, err := batchOptions("Parallel", "p", tc.opts)
		require.ErrorContains(t, err, `durable: Parallel "p": `+tc.want)
	}
	o, err := batchOptions("Map", "m", []BatchOption{WithMaxConcurrency(3), WithCompletion(AllCompleted())})
	require.NoError(t, err)
	cfg := o.config(10)
	require.Equal(t, 3, cfg.MaxConcurrency)
	require.Equal(t, 100.0, *cfg.ToleratedFailurePercentage)
	require.Equal(t, 1, *FirstSuccessful().MinSuccessful)
}
