// Command coordinator runs a jetflow coordinator. Without --nats it also runs an embedded NATS
// server with JetStream (file store under --data) and prints the URL workers should use.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetflow/jetflow/coordinator"
	"github.com/jetflow/jetflow/internal/embedded"
	"github.com/jetflow/jetflow/internal/service"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "coordinator:", err)
		os.Exit(1)
	}
}

func run() error {
	natsURL := flag.String("nats", os.Getenv("NATS_URL"), "NATS server URL; empty: run an embedded server")
	data := flag.String("data", "./data", "embedded server: JetStream store directory")
	host := flag.String("host", "127.0.0.1", "embedded server: address to listen on")
	port := flag.Int("port", 4222, "embedded server: port to listen on")
	replicas := flag.Int("replicas", 1, "replication factor of streams and buckets (3 on a 3-node cluster)")
	level := flag.String("log-level", "info", "log level: debug, info, warn, error")
	otelExporter := flag.String("otel", service.OTelDefault(), service.OTelUsage)
	flag.Parse()
	log := service.Logger(*level)
	stopTelemetry, err := service.StartTelemetry(*otelExporter, "jetflow-coordinator")
	if err != nil {
		return err
	}
	defer stopTelemetry()

	ctx, stop := service.SignalContext(context.Background())
	defer stop()

	url := *natsURL
	var opts []nats.Option
	if url == "" {
		srv, err := embedded.Start(embedded.Options{StoreDir: *data, Host: *host, Port: *port})
		if err != nil {
			return err
		}
		defer srv.Shutdown()
		url = srv.URL()
		fmt.Printf("embedded NATS with JetStream at %s (store %s)\nworkers: worker --nats %s\n", url, *data, url)
		opts = append(opts, srv.InProcess()) // the coordinator reaches its own server in memory
	}
	nc, err := service.Connect(url, "jetflow-coordinator", log, opts...)
	if err != nil {
		return err
	}
	defer nc.Close()
	c, err := coordinator.New(nc, &coordinator.Config{Replicas: *replicas, Logger: log})
	if err != nil {
		return err
	}
	if err := c.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	log.Info("stopping")
	stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return c.Stop(stopCtx)
}
