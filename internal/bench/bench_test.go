package bench

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/jetflow/jetflow/durabletest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, durabletest.KnownLeaks()...) }

// The bench runs every workload end to end (scaled down a hundredfold) and reports what it says;
// this checks the figures are there and sane, not how fast anything is.
func TestEveryWorkloadRuns(t *testing.T) {
	var got []Result
	err := Run(context.Background(), Options{Scale: 100, AckWait: time.Second, Workloads: []string{"RAW", "W1", "W2", "W3", "W4", "W5"}},
		func(r Result) { got = append(got, r) })
	require.NoError(t, err)
	names := []string{}
	for _, r := range got {
		names = append(names, r.Workload)
		require.Positive(t, r.WallMS, r.Workload)
	}
	require.Equal(t, []string{"RAW", "W1", "W1", "W2", "W3", "W4", "W5"}, names)
	require.Positive(t, got[0].TasksPerSec)
	require.Positive(t, got[0].CPUPerUnitUS)
	require.Positive(t, got[1].BranchesPerSec)
	require.Positive(t, got[1].CPUPerUnitUS)
	require.LessOrEqual(t, got[3].MaxInFlight, 10, "W2 never has more than 10 branches in flight")
	require.Positive(t, got[4].P50MS)
	require.Equal(t, 2, got[4].N, "W3: 200 executions, scaled down")
	require.Positive(t, got[4].CPUPerUnitUS)
	require.Equal(t, 20, got[5].N)

	err = Run(context.Background(), Options{Workloads: []string{"W9"}}, func(Result) {})
	require.ErrorContains(t, err, `unknown workload "W9"`)
}

// In process, every connection (RAW's too) reaches the embedded server in memory, and the
// figures say so.
func TestTheBenchRunsInProcess(t *testing.T) {
	var got []Result
	err := Run(context.Background(), Options{Scale: 100, InProcess: true, Workloads: []string{"RAW", "W1", "W3"}, W3Executions: 500},
		func(r Result) { got = append(got, r) })
	require.NoError(t, err)
	require.Len(t, got, 4)
	require.Equal(t, 5, got[3].N, "W3 runs as many executions as asked, scaled down")
	for _, r := range got {
		require.Equal(t, "file, default flush, in process", r.Durability, r.Workload)
		require.Positive(t, r.WallMS, r.Workload)
	}
}
