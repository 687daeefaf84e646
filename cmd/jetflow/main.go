// Command jetflow is jetflow's command-line tool: run the demo, start, list, watch and cancel
// executions, wait for their results, describe them, and run the bench.
//
// Exit codes: 0 success; 1 error; 2 bad usage; 3 the execution failed (or was cancelled, or timed
// out); 4 timed out waiting; 5 no such execution; 6 the execution has already ended (cancel).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/jetflow/jetflow/client"
)

// Exit codes scripts can rely on.
const (
	exitGeneric  = 1
	exitUsage    = 2
	exitFailed   = 3
	exitTimedOut = 4
	exitNotFound = 5
	exitEnded    = 6
)

type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func main() {
	err := newRoot().ExecuteContext(context.Background())
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, "jetflow:", err)
	os.Exit(exitCode(err))
}

// exitCode maps a command's error to the exit codes in the package comment.
func exitCode(err error) int {
	var ee *exitError
	var failed *client.ExecutionError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &failed):
		return exitFailed
	case errors.Is(err, context.DeadlineExceeded):
		return exitTimedOut
	case errors.Is(err, client.ErrNotFound):
		return exitNotFound
	case errors.Is(err, client.ErrAlreadyEnded):
		return exitEnded
	case errors.As(err, &ee):
		return ee.code
	}
	return exitGeneric
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "jetflow",
		Short:         "Durable parallel executions over NATS JetStream",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().String("nats", "", "NATS server URL (default $NATS_URL, else nats://127.0.0.1:4222)")
	root.AddCommand(demoCmd(), startCmd(), resultCmd(), describeCmd(), listCmd(), watchCmd(), cancelCmd(), benchCmd())
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return &exitError{exitUsage, err} })
	return root
}

func usageArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.RangeArgs(1, n)(cmd, args); err != nil {
			return &exitError{exitUsage, err}
		}
		return nil
	}
}
