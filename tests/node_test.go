package tests

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/client"
	"github.com/jetflow/jetflow/durabletest"
	"github.com/jetflow/jetflow/examples"
)

// nodeClient returns the command that runs tests/node/client.mjs, or skips the test when Node or
// the npm packages are missing — unless JETFLOW_REQUIRE_NODE=1 (as in .ci/run, which installs
// them), where that is a failure.
func nodeClient(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	dir, err := filepath.Abs("node")
	require.NoError(t, err)
	node, err := exec.LookPath("node")
	missing := ""
	switch {
	case err != nil:
		missing = "node is not installed"
	default:
		if _, err := os.Stat(filepath.Join(dir, "node_modules", "nats")); err != nil {
			missing = "the npm packages are not installed (npm ci --prefix tests/node)"
		}
	}
	if missing != "" {
		if os.Getenv("JETFLOW_REQUIRE_NODE") == "1" {
			t.Fatal(missing)
		}
		t.Skip(missing)
	}
	cmd := exec.Command(node, append([]string{filepath.Join(dir, "client.mjs")}, args...)...)
	cmd.Dir = dir
	return cmd
}

// A plain NATS client in another language (Node, the npm package nats) starts the check-services
// example over the JSON protocol, twice with one execution name, and reads its BatchResult.
func TestNodeClientOverJSON(t *testing.T) {
	env := durabletest.New(t)
	durabletest.Register(env, examples.CheckServicesFunction, examples.CheckServices)
	cmd := nodeClient(t, env.URL(), "order-42-from-node")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "node client:\n%s", out)
	t.Logf("node client output:\n%s", out)

	var got struct {
		First, Second struct {
			ExecutionID string `json:"executionId"`
		}
		Result struct {
			ExecutionID string          `json:"executionId"`
			Status      string          `json:"status"`
			Result      json.RawMessage `json:"result"`
		}
		Rejected struct {
			Error struct{ Type, Message string }
		}
	}
	require.NoError(t, json.Unmarshal(out, &got), "%s", out)
	require.Equal(t, "order-42-from-node", got.First.ExecutionID)
	require.Equal(t, got.First.ExecutionID, got.Second.ExecutionID, "one name, one execution")
	require.Equal(t, "SUCCEEDED", got.Result.Status)
	require.JSONEq(t, `{"all":[
		{"index":0,"name":"inventory","status":"SUCCEEDED","result":"inventory ok for order-42"},
		{"index":1,"name":"payment","status":"SUCCEEDED","result":"payment ok for order-42"},
		{"index":2,"name":"shipping","status":"SUCCEEDED","result":"shipping ok for order-42"}],
		"completionReason":"ALL_COMPLETED","status":"SUCCEEDED","successCount":3,"failureCount":0,"startedCount":0,"totalCount":3}`,
		string(got.Result.Result))
	require.Equal(t, "BadRequest", got.Rejected.Error.Type)

	ctx, cancel := context.WithTimeout(context.Background(), env.Timeout())
	defer cancel()
	xs, err := env.Client().List(ctx, client.ListOptions{Function: examples.CheckServicesFunction})
	require.NoError(t, err)
	require.Len(t, xs, 1, "the second start made no second execution")
}
