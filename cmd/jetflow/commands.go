package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/jetflow/jetflow/client"
	"github.com/jetflow/jetflow/internal/jsonvalue"
	"github.com/jetflow/jetflow/internal/service"
)

func connect(cmd *cobra.Command) (*nats.Conn, *client.Client, error) {
	flagURL, _ := cmd.Flags().GetString("nats")
	nc, err := nats.Connect(service.URL(flagURL), nats.Name("jetflow-cli"), nats.Timeout(5*time.Second))
	if err != nil {
		return nil, nil, fmt.Errorf("connect to NATS at %s: %w", service.URL(flagURL), err)
	}
	cl, err := client.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, cl, nil
}

// withClient connects to the system the command names, and runs fn with a client and a context
// that ends after timeout.
func withClient(cmd *cobra.Command, timeout time.Duration, fn func(context.Context, *client.Client) error) error {
	nc, cl, err := connect(cmd)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
	defer cancel()
	return fn(ctx, cl)
}

func startCmd() *cobra.Command {
	var name string
	var wait bool
	var timeout, execTimeout time.Duration
	cmd := &cobra.Command{
		Use:   "start FUNCTION [INPUT_JSON]",
		Short: "Start an execution and print its id (with --wait, its result)",
		Long: "Start an execution of FUNCTION with INPUT_JSON (a JSON value; '-' reads it from stdin).\n" +
			"With --name the start is idempotent: the same name is the same execution.",
		Example: `  jetflow start order-workflow '{"id":"A-1","items":[{"sku":"pen","quantity":2,"cents":150}]}' --wait`,
		Args:    usageArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var input any
			if len(args) == 2 {
				raw := []byte(args[1])
				if args[1] == "-" {
					var err error
					if raw, err = io.ReadAll(cmd.InOrStdin()); err != nil {
						return err
					}
				}
				var err error
				if input, err = jsonvalue.Parse(raw); err != nil {
					return &exitError{exitUsage, fmt.Errorf("INPUT_JSON: %w", err)}
				}
			}
			return withClient(cmd, timeout, func(ctx context.Context, cl *client.Client) error {
				var opts []client.StartOption
				if name != "" {
					opts = append(opts, client.WithExecutionName(name))
				}
				if execTimeout != 0 {
					opts = append(opts, client.WithTimeout(execTimeout))
				}
				id, err := cl.Start(ctx, args[0], input, opts...)
				if err != nil {
					return err
				}
				if !wait {
					fmt.Fprintln(cmd.OutOrStdout(), id)
					return nil
				}
				fmt.Fprintln(cmd.ErrOrStderr(), "execution", id)
				return printResult(ctx, cmd.OutOrStdout(), cl, id)
			})
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "execution name: starting twice with one name starts one execution")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait for the result and print it")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "how long to wait with --wait")
	cmd.Flags().DurationVar(&execTimeout, "execution-timeout", 0, "end the execution TIMED_OUT if it runs longer than this (default: no limit)")
	return cmd
}

func cancelCmd() *cobra.Command {
	var reason string
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "cancel EXECUTION_ID",
		Short: "Cancel a running execution: every running branch is cancelled and nothing more runs",
		Long: "Cancel a running execution. It ends CANCELLED; the Context of every piece of it running on\n" +
			"any worker is cancelled, and nothing more of it is dispatched. By default the command waits\n" +
			"until the execution has ended (exit 0); --wait=false returns once the request is stored.",
		Example: "  jetflow cancel 5PRY3xEUfRwL1jTy3uAm2b --reason 'wrong input'",
		Args:    usageArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd, timeout, func(ctx context.Context, cl *client.Client) error {
				if err := cl.Cancel(ctx, args[0], client.WithReason(reason)); err != nil {
					return err
				}
				if wait {
					if err := cl.Result(ctx, args[0], nil); !errors.Is(err, client.ErrCancelled) {
						if err == nil {
							return fmt.Errorf("execution %s succeeded before the cancellation reached it", args[0])
						}
						return err
					}
				}
				fmt.Fprintln(cmd.OutOrStdout(), "cancelled", args[0])
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why: the message of the cancelled execution's error")
	cmd.Flags().BoolVar(&wait, "wait", true, "wait until the execution has ended")
	cmd.Flags().DurationVar(&timeout, "timeout", time.Minute, "how long to wait")
	return cmd
}

func resultCmd() *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "result EXECUTION_ID",
		Short: "Wait for an execution's result and print it as JSON",
		Args:  usageArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd, timeout, func(ctx context.Context, cl *client.Client) error {
				return printResult(ctx, cmd.OutOrStdout(), cl, args[0])
			})
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "how long to wait")
	return cmd
}

func describeCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "describe EXECUTION_ID",
		Short: "Show an execution's status and operation tree",
		Args:  usageArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd, 30*time.Second, func(ctx context.Context, cl *client.Client) error {
				x, err := cl.Describe(ctx, args[0])
				if err != nil {
					return err
				}
				if asJSON {
					enc := json.NewEncoder(cmd.OutOrStdout())
					enc.SetIndent("", "  ")
					return enc.Encode(x)
				}
				printTree(cmd.OutOrStdout(), x)
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printResult(ctx context.Context, w io.Writer, cl *client.Client, id string) error {
	var out any
	if err := cl.Result(ctx, id, &out); err != nil {
		return err
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return fmt.Errorf("result of %s is not representable as JSON: %w", id, err)
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

// printTree writes an execution and its operations, one line each, indented by depth.
func printTree(w io.Writer, x *client.Execution) {
	fmt.Fprintf(w, "execution %s  %s  %s", x.ID, x.Function, x.Status)
	if x.EndedAt != nil {
		fmt.Fprintf(w, "  %s", x.EndedAt.Sub(x.CreatedAt).Round(time.Millisecond))
	}
	fmt.Fprintln(w)
	if x.Error != nil {
		fmt.Fprintf(w, "  error: %s: %s\n", x.Error.Type, x.Error.Message)
	}
	var walk func(ops []*client.Operation, depth int)
	walk = func(ops []*client.Operation, depth int) {
		for _, op := range ops {
			indent := strings.Repeat("  ", depth+1)
			line := fmt.Sprintf("%s%-8s %-7s %q %s", indent, op.ID, op.Kind, op.Name, op.Status)
			if op.Attempt > 1 {
				line += fmt.Sprintf(" (attempt %d)", op.Attempt)
			}
			if op.Started != nil && op.Ended != nil {
				line += " " + op.Ended.Sub(*op.Started).Round(time.Microsecond).String()
			}
			if op.FireAt != nil {
				line += " until " + op.FireAt.Format(time.RFC3339Nano)
			}
			if op.Error != nil {
				line += fmt.Sprintf("  %s: %s", op.Error.Type, op.Error.Message)
			}
			fmt.Fprintln(w, line)
			walk(op.Children, depth+1)
		}
	}
	walk(x.Operations, 0)
}
