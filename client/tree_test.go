package client

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/messages"
)

func flatten(ops []*Operation, depth int, out *[]string) {
	for _, op := range ops {
		*out = append(*out, string(rune('0'+depth))+" "+op.ID+" "+op.Kind+" "+op.Status)
		flatten(op.Children, depth+1, out)
	}
}

func TestOperationTree(t *testing.T) {
	cps := []*messages.Checkpoint{
		{OpID: "10", OpKind: messages.OpStep, Status: messages.OpSucceeded},
		{OpID: "2", OpKind: messages.OpParallel, Status: messages.OpSucceeded,
			Summary: &messages.BatchSummary{Started: 3, Done: []byte{1}}},
		{OpID: "2.0.5", OpKind: messages.OpBranch, Status: messages.OpSucceeded,
			Inner: []*messages.Checkpoint{{OpID: "2-1-1", OpKind: messages.OpStep, Status: messages.OpSucceeded}}},
		{OpID: "2-2-1", OpKind: messages.OpStep, Status: messages.OpPending},
		{OpID: "1", OpKind: messages.OpChild, Status: messages.OpSucceeded},
		{OpID: "1-1", OpKind: messages.OpWait, Status: messages.OpSucceeded},
		{OpID: "3", OpKind: messages.OpParallel, Status: messages.OpStarted, Flat: true},
		{OpID: "3-1-1", OpKind: messages.OpStep, Status: messages.OpSucceeded},
	}
	var got []string
	flatten(operationTree(cps), 0, &got)
	require.Equal(t, []string{
		"0 1 CONTEXT SUCCEEDED",
		"1 1-1 WAIT SUCCEEDED",
		"0 2 PARALLEL SUCCEEDED",
		"1 2-1 BRANCH SUCCEEDED",
		"2 2-1-1 STEP SUCCEEDED",
		"1 2-2 BRANCH STARTED", // abandoned
		"2 2-2-1 STEP PENDING",
		"1 2-3 BRANCH STARTED", // abandoned before its first operation
		"0 3 PARALLEL STARTED",
		"1 3-1 BRANCH STARTED", // running; flat: its operations show under the batch
		"1 3-1-1 STEP SUCCEEDED",
		"0 10 STEP SUCCEEDED",
	}, got)
}
