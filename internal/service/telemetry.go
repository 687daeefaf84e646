package service

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdoutmetric"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
)

// OTelUsage describes the --otel flag of every binary.
const OTelUsage = "OpenTelemetry exporter for traces and metrics: none, stdout, or otlp (OTLP over HTTP; " +
	"endpoint from OTEL_EXPORTER_OTLP_ENDPOINT, default localhost:4318). Default $JETFLOW_OTEL, else none"

// OTelDefault is the --otel flag's default: $JETFLOW_OTEL, else "none".
func OTelDefault() string {
	if v := os.Getenv("JETFLOW_OTEL"); v != "" {
		return v
	}
	return "none"
}

// StartTelemetry is Telemetry for a binary's main: it returns the function to defer, which flushes
// for at most 5 seconds.
func StartTelemetry(exporter, service string) (stop func(), err error) {
	shutdown, err := Telemetry(context.Background(), exporter, service)
	if err != nil {
		return nil, err
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = shutdown(ctx)
	}, nil
}

// Telemetry installs global OpenTelemetry providers that export to exporter ("none", "stdout" or
// "otlp") as service, and returns the function that flushes and stops them.
func Telemetry(ctx context.Context, exporter, service string) (shutdown func(context.Context) error, err error) {
	var (
		spans   sdktrace.SpanExporter
		metrics sdkmetric.Exporter
	)
	switch exporter {
	case "", "none":
		return func(context.Context) error { return nil }, nil
	case "stdout":
		if spans, err = stdouttrace.New(stdouttrace.WithWriter(os.Stderr)); err != nil {
			return nil, err
		}
		if metrics, err = stdoutmetric.New(stdoutmetric.WithWriter(os.Stderr)); err != nil {
			return nil, err
		}
	case "otlp":
		if spans, err = otlptracehttp.New(ctx); err != nil {
			return nil, fmt.Errorf("otlp traces: %w", err)
		}
		if metrics, err = otlpmetrichttp.New(ctx); err != nil {
			return nil, fmt.Errorf("otlp metrics: %w", err)
		}
	default:
		return nil, fmt.Errorf("--otel: unknown exporter %q (want none, stdout or otlp)", exporter)
	}
	res := resource.NewWithAttributes(semconv.SchemaURL, semconv.ServiceName(service))
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(spans), sdktrace.WithResource(res))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithResource(res),
		sdkmetric.WithReader(sdkmetric.NewPeriodicReader(metrics, sdkmetric.WithInterval(30*time.Second))))
	otel.SetTracerProvider(tp)
	otel.SetMeterProvider(mp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	return func(ctx context.Context) error { return errors.Join(tp.Shutdown(ctx), mp.Shutdown(ctx)) }, nil
}
