package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDemoRunsEveryExample(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, runDemo(context.Background(), &out, t.TempDir(), 2, "error"))
	s := out.String()
	require.Contains(t, s, "a coordinator and 2 workers are running")
	require.Contains(t, s, `"status": "shipped"`)
	require.Contains(t, s, `WAIT    "await-pickup" SUCCEEDED`)
	require.Contains(t, s, `PARALLEL "check-services" SUCCEEDED`)
	require.Contains(t, s, `"completionReason": "MIN_SUCCESSFUL_REACHED"`)
	require.Contains(t, s, `"errorMessage": "pager gateway unreachable"`)
	require.Contains(t, s, `PARALLEL "services-ap" SUCCEEDED`)
	require.Contains(t, s, `BRANCH  "A-3" SUCCEEDED`)
	require.NotContains(t, s, "execution failed")
}
