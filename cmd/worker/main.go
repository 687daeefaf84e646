// Command worker runs a jetflow worker with the example handlers registered (package examples).
// Your own workers are programs like this one that register your handlers.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/jetflow/jetflow/examples"
	"github.com/jetflow/jetflow/internal/service"
	"github.com/jetflow/jetflow/worker"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}

func run() error {
	natsURL := flag.String("nats", "", "NATS server URL (default $NATS_URL, else "+service.DefaultURL+")")
	concurrency := flag.Int("concurrency", 256, "most handler invocations run at once")
	inline := flag.Int("inline-branches", 16, "largest Parallel/Map run inline on the worker that reaches it (-1: none)")
	replicas := flag.Int("replicas", 1, "replication factor of streams and buckets (3 on a 3-node cluster)")
	drain := flag.Duration("drain", 30*time.Second, "on SIGTERM, how long to let running invocations finish")
	level := flag.String("log-level", "info", "log level: debug, info, warn, error")
	otelExporter := flag.String("otel", service.OTelDefault(), service.OTelUsage)
	flag.Parse()
	log := service.Logger(*level)
	stopTelemetry, err := service.StartTelemetry(*otelExporter, "jetflow-worker")
	if err != nil {
		return err
	}
	defer stopTelemetry()

	ctx, stop := service.SignalContext(context.Background())
	defer stop()
	nc, err := service.Connect(service.URL(*natsURL), "jetflow-worker", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	w, err := worker.New(nc, &worker.Config{MaxConcurrent: *concurrency, InlineBranches: *inline, Replicas: *replicas, Logger: log})
	if err != nil {
		return err
	}
	examples.Register(w)
	if err := w.Start(ctx); err != nil {
		return err
	}
	log.Info("worker running", "nats", nc.ConnectedUrl(), "functions", w.Functions())
	<-ctx.Done()
	log.Info("draining")
	stopCtx, cancel := context.WithTimeout(context.Background(), *drain)
	defer cancel()
	return w.Stop(stopCtx)
}
