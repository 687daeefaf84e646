// Package telemetry holds jetflow's OpenTelemetry instruments and the W3C trace context that links
// one execution's spans across processes: in NATS headers on messages, and as a traceparent string
// in the records that outlive them (an execution's span, a batch's span, a timer's resume point).
//
// With no providers configured, the OpenTelemetry globals are used, which are no-ops until the
// program installs real ones: telemetry is off by default and costs next to nothing then.
package telemetry

import (
	"context"
	"sync"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Scope is the instrumentation scope of every span and instrument.
const Scope = "github.com/jetflow/jetflow"

// Attribute keys.
const (
	KeyExecution = attribute.Key("jetflow.execution.id")
	KeyFunction  = attribute.Key("jetflow.function")
	KeyStatus    = attribute.Key("jetflow.status")
	KeyOp        = attribute.Key("jetflow.operation.id")
	KeyName      = attribute.Key("jetflow.operation.name")
	KeyTask      = attribute.Key("jetflow.task.id")
	KeyIndex     = attribute.Key("jetflow.branch.index")
	KeyAttempt   = attribute.Key("jetflow.step.attempt")
	KeyKind      = attribute.Key("jetflow.task.kind") // handler or branch
	KeyOutcome   = attribute.Key("jetflow.outcome")
	KeyBatch     = attribute.Key("jetflow.batch") // "<execution>.<op>"
)

// Telemetry is one service's tracer and instruments. The zero value is not usable; use New. Its
// methods are safe for concurrent use.
type Telemetry struct {
	Tracer trace.Tracer
	Meter  metric.Meter

	ExecutionsStarted metric.Int64Counter
	ExecutionsEnded   metric.Int64Counter
	TaskDuration      metric.Float64Histogram
	TaskLatency       metric.Float64Histogram
	Retries           metric.Int64Counter
	Redeliveries      metric.Int64Counter

	attrsMu sync.RWMutex
	attrs   map[attrsKey]metric.MeasurementOption
}

// Attrs returns the metric option for the attributes kv, built once per distinct list (building
// an attribute set on every measurement showed in profiles). Meant for lists from a small set of
// values: function names, kinds, outcomes. A list of up to 4 costs no allocation.
func (t *Telemetry) Attrs(kv ...attribute.KeyValue) metric.MeasurementOption {
	if len(kv) > len(attrsKey{}) {
		return metric.WithAttributeSet(attribute.NewSet(kv...))
	}
	var key attrsKey
	copy(key[:], kv)
	t.attrsMu.RLock()
	o, ok := t.attrs[key]
	t.attrsMu.RUnlock()
	if ok {
		return o
	}
	o = metric.WithAttributeSet(attribute.NewSet(kv...))
	t.attrsMu.Lock()
	if t.attrs == nil {
		t.attrs = map[attrsKey]metric.MeasurementOption{}
	}
	t.attrs[key] = o
	t.attrsMu.Unlock()
	return o
}

// attrsKey is a short attribute list as a map key.
type attrsKey [4]attribute.KeyValue

// New makes the instruments from tp and mp (nil: the OpenTelemetry globals).
func New(tp trace.TracerProvider, mp metric.MeterProvider) *Telemetry {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	m := mp.Meter(Scope)
	t := &Telemetry{Tracer: tp.Tracer(Scope), Meter: m}
	// Instrument creation fails only on invalid names or options, which these are not; a
	// failed instrument is a no-op one, which is what the API returns alongside the error.
	t.ExecutionsStarted, _ = m.Int64Counter("jetflow.executions.started", metric.WithDescription("executions started"))
	t.ExecutionsEnded, _ = m.Int64Counter("jetflow.executions.ended",
		metric.WithDescription("executions ended, by final status (jetflow.status)"))
	t.TaskDuration, _ = m.Float64Histogram("jetflow.task.duration", metric.WithUnit("s"),
		metric.WithDescription("how long a worker took over one task, by function, kind and outcome"))
	t.TaskLatency, _ = m.Float64Histogram("jetflow.task.latency", metric.WithUnit("s"),
		metric.WithDescription("how long a task waited, from its publication to a worker taking it, by function and kind"))
	t.Retries, _ = m.Int64Counter("jetflow.step.retries", metric.WithDescription("step attempts that failed and will be retried"))
	t.Redeliveries, _ = m.Int64Counter("jetflow.task.redeliveries",
		metric.WithDescription("tasks delivered again (a worker died, or did not answer in time)"))
	return t
}

var w3c = propagation.TraceContext{}

// headerCarrier adapts nats.Header to the propagation API.
type headerCarrier nats.Header

func (h headerCarrier) Get(key string) string { return nats.Header(h).Get(key) }
func (h headerCarrier) Set(key, v string)     { nats.Header(h).Set(key, v) }
func (h headerCarrier) Keys() []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}

// Inject writes ctx's span context into h (nothing if there is none).
func Inject(ctx context.Context, h nats.Header) {
	if trace.SpanContextFromContext(ctx).IsValid() {
		w3c.Inject(ctx, headerCarrier(h))
	}
}

// Extract returns ctx with the remote span context found in h, if any.
func Extract(ctx context.Context, h nats.Header) context.Context {
	if h == nil {
		return ctx
	}
	return w3c.Extract(ctx, headerCarrier(h))
}

// TraceParent is ctx's span context as a W3C traceparent string ("" if none).
func TraceParent(ctx context.Context) string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ""
	}
	m := propagation.MapCarrier{}
	w3c.Inject(ctx, m)
	return m["traceparent"]
}

// WithTraceParent returns ctx with the remote span context tp ("" or invalid: ctx unchanged).
func WithTraceParent(ctx context.Context, tp string) context.Context {
	if tp == "" {
		return ctx
	}
	return w3c.Extract(ctx, propagation.MapCarrier{"traceparent": tp})
}

// Header returns a NATS header carrying tp, or nil when tp is empty.
func Header(tp string) nats.Header {
	if tp == "" {
		return nil
	}
	return nats.Header{"traceparent": []string{tp}}
}
