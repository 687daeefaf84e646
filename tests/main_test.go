// Package tests holds jetflow's end-to-end and fault tests. Each runs against a real embedded
// JetStream through durabletest.
package tests

import (
	"log/slog"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/jetflow/jetflow/client"
	"github.com/jetflow/jetflow/durabletest"
)

// testLogger is where services log in a test: nowhere, unless JETFLOW_TEST_LOG names a level
// (debug, info, warn), then stderr.
func testLogger() *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(os.Getenv("JETFLOW_TEST_LOG"))); err != nil || os.Getenv("JETFLOW_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, durabletest.KnownLeaks()...) }

// requireFailed asserts that err is a failed execution whose error has the given type, and
// returns it for further checks.
func requireFailed(t *testing.T, err error, errorType string) *client.ExecutionError {
	t.Helper()
	var ee *client.ExecutionError
	require.ErrorAs(t, err, &ee)
	require.Equal(t, errorType, ee.ErrorType)
	return ee
}
