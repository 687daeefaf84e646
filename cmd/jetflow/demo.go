package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/jetflow/jetflow/client"
	"github.com/jetflow/jetflow/coordinator"
	"github.com/jetflow/jetflow/examples"
	"github.com/jetflow/jetflow/internal/embedded"
	"github.com/jetflow/jetflow/internal/service"
	"github.com/jetflow/jetflow/worker"
)

func demoCmd() *cobra.Command {
	var data, level, otelExporter string
	var workers int
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run an embedded NATS server, a coordinator and workers in one process, and the examples",
		Long: "demo starts everything jetflow needs in this process — an embedded NATS server with\n" +
			"JetStream, a coordinator and workers — runs each example execution, and prints its result\n" +
			"and operation tree. Nothing else needs to be installed or running.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := service.SignalContext(cmd.Context())
			defer stop()
			stopTelemetry, err := service.StartTelemetry(otelExporter, "jetflow-demo")
			if err != nil {
				return &exitError{exitUsage, err}
			}
			defer stopTelemetry()
			return runDemo(ctx, cmd.OutOrStdout(), data, workers, level)
		},
	}
	cmd.Flags().StringVar(&data, "data", "", "JetStream store directory (default: a temporary one, removed afterwards)")
	cmd.Flags().IntVar(&workers, "workers", 2, "how many workers to run")
	cmd.Flags().StringVar(&level, "log-level", "warn", "log level of the services: debug, info, warn, error")
	cmd.Flags().StringVar(&otelExporter, "otel", service.OTelDefault(), service.OTelUsage)
	return cmd
}

func runDemo(ctx context.Context, out io.Writer, data string, workers int, level string) error {
	if workers < 1 {
		return &exitError{exitUsage, fmt.Errorf("--workers must be at least 1, got %d", workers)}
	}
	if data == "" {
		dir, err := os.MkdirTemp("", "jetflow-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		data = dir
	}
	log := service.Logger(level)
	srv, err := embedded.Start(embedded.Options{StoreDir: data})
	if err != nil {
		return err
	}
	defer srv.Shutdown()
	fmt.Fprintf(out, "embedded NATS with JetStream at %s\n", srv.URL())

	var stops []func(context.Context) error
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for i := len(stops) - 1; i >= 0; i-- {
			_ = stops[i](stopCtx)
		}
	}()
	// Everything here runs in this process: its connections reach the server in memory.
	connect := func(name string) (*service.Conn, error) { return service.Dial(srv.URL(), name, log, srv.InProcess()) }

	cc, err := connect("demo-coordinator")
	if err != nil {
		return err
	}
	stops = append(stops, cc.Close)
	coord, err := coordinator.New(cc.NC, &coordinator.Config{Logger: log})
	if err != nil {
		return err
	}
	if err := coord.Start(ctx); err != nil {
		return err
	}
	stops = append(stops, coord.Stop)
	for i := range workers {
		wc, err := connect(fmt.Sprintf("demo-worker-%d", i))
		if err != nil {
			return err
		}
		stops = append(stops, wc.Close)
		w, err := worker.New(wc.NC, &worker.Config{Logger: log.With("worker", i)})
		if err != nil {
			return err
		}
		examples.Register(w)
		if err := w.Start(ctx); err != nil {
			return err
		}
		stops = append(stops, w.Stop)
	}
	fmt.Fprintf(out, "a coordinator and %d workers are running\n", workers)

	clc, err := connect("demo-client")
	if err != nil {
		return err
	}
	stops = append(stops, clc.Close)
	cl, err := client.New(clc.NC)
	if err != nil {
		return err
	}
	for _, d := range examples.Demos() {
		fmt.Fprintf(out, "\n== %s\n", d.Title)
		start := time.Now()
		id, err := cl.Start(ctx, d.Function, d.Input)
		if err != nil {
			return err
		}
		var result any
		rctx, cancel := context.WithTimeout(ctx, time.Minute)
		err = cl.Result(rctx, id, &result)
		cancel()
		if err != nil {
			fmt.Fprintf(out, "execution failed: %s: %v\n", id, err)
		} else {
			b, _ := json.MarshalIndent(result, "", "  ")
			fmt.Fprintf(out, "execution %s of %s finished in %s with:\n%s\n", id, d.Function,
				time.Since(start).Round(time.Millisecond), b)
		}
		x, err := cl.Describe(ctx, id)
		if err != nil {
			return err
		}
		printTree(out, x)
	}
	return nil
}
