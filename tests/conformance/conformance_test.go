package conformance

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/jetflow/jetflow/client"
	"github.com/jetflow/jetflow/durable"
	"github.com/jetflow/jetflow/durabletest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, durabletest.KnownLeaks()...) }

// goldenFiles are the case files to check: JETFLOW_GOLDEN (a list separated by the OS path list
// separator) if set, else the recorded reference cases beside the repository.
func goldenFiles(t *testing.T) []string {
	if env := os.Getenv("JETFLOW_GOLDEN"); env != "" {
		return filepath.SplitList(env)
	}
	return []string{filepath.Join("..", "..", "..", "shared", "reference", "aws-golden-public.json")}
}

func TestReferenceCases(t *testing.T) {
	for _, file := range goldenFiles(t) {
		cases, err := Load(file)
		require.NoError(t, err, "the reference cases must be readable")
		require.NotEmpty(t, cases)
		for _, c := range cases {
			if c.Kind != "parallel" && c.Kind != "map" {
				continue // special cases have tests of their own (tests/parallel_special_test.go)
			}
			t.Run(c.ID, func(t *testing.T) {
				t.Parallel()
				runCase(t, c)
			})
		}
	}
}

func runCase(t *testing.T, c Case) {
	env := durabletest.New(t)
	rec := &Recorder{}
	ip := &Interpreter{Case: c, Rec: rec,
		// A durable wait of s seconds in a case lasts s × 50 µs here (20 minutes: 60 ms).
		Scale: func(s float64) time.Duration {
			return max(10*time.Millisecond, time.Duration(s*float64(50*time.Microsecond)))
		},
		// The default retry policy scaled down a thousandfold: the same attempts, shorter waits.
		Retry: durable.RetryPolicy{MaxAttempts: 6, InitialInterval: 5 * time.Millisecond, MaxInterval: 60 * time.Millisecond},
	}
	fn := "case-" + strings.NewReplacer(".", "-").Replace(c.ID)
	durabletest.Register(env, fn, ip.Handler())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id, err := env.Client().Start(ctx, fn, "")
	require.NoError(t, err)
	var out Outcome
	err = env.Client().Result(ctx, id, &out)
	obs := Observed{Rec: rec}
	var ee *client.ExecutionError
	switch {
	case err == nil:
		obs.Outcome = &out
	case errors.As(err, &ee):
		obs.ExecError = ee
	default:
		t.Fatalf("%s: %v", c.ID, err)
	}
	if diffs := Check(c, obs); len(diffs) > 0 {
		t.Errorf("%s (%s) differs from the reference:\n  %s", c.ID, c.Description, strings.Join(diffs, "\n  "))
	}
}
