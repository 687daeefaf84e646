package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// A bench flag out of range is a usage error, found before anything starts.
func TestBenchRefusesBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "--w3-executions", "0"},
		{"bench", "--sync", "sometimes"},
	} {
		var out bytes.Buffer
		root := newRoot()
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(args)
		err := root.ExecuteContext(context.Background())
		require.Error(t, err, args)
		require.Equal(t, exitUsage, exitCode(err), "%v: %s", args, out.String())
	}
}
