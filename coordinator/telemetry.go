package coordinator

import (
	"context"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetflow/jetflow/internal/telemetry"
	"github.com/jetflow/jetflow/messages"
)

// An execution's span and each batch's span live in the coordinator that began them, from the
// start (or the opening) to the end; their traceparents are stored in the execution's and the
// batch's records, so that every task dispatched later, by any coordinator, carries its parent. A
// span whose coordinator stopped before the end is not ended anywhere (its children still are, in
// the same trace): spans are not durable, the records are.

// spanTable holds the open spans, by execution id or batch key. Bounded: past maxOpenSpans the
// oldest are ended early, marked as such.
type spanTable struct {
	mu    sync.Mutex
	m     map[string]trace.Span
	order []string
}

const maxOpenSpans = 100_000

func newSpanTable() *spanTable { return &spanTable{m: map[string]trace.Span{}} }

func (t *spanTable) has(key string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[key] != nil
}

func (t *spanTable) put(key string, s trace.Span) {
	if !s.IsRecording() {
		return // tracing is off: nothing to keep
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for len(t.m) >= maxOpenSpans && len(t.order) > 0 {
		old := t.order[0]
		t.order = t.order[1:]
		if sp := t.m[old]; sp != nil {
			sp.SetAttributes(attribute.Bool("jetflow.span.truncated", true))
			sp.End()
			delete(t.m, old)
		}
	}
	t.m[key] = s
	t.order = append(t.order, key)
}

// take removes and returns the span under key (nil if none).
func (t *spanTable) take(key string) trace.Span {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.m[key]
	delete(t.m, key)
	if len(t.order) > 2*len(t.m)+64 { // compact the order now and then
		kept := t.order[:0]
		for _, k := range t.order {
			if t.m[k] != nil {
				kept = append(kept, k)
			}
		}
		t.order = kept
	}
	return s
}

// drop ends nothing and forgets the span under key (a duplicate opening's).
func (t *spanTable) drop(key string) { t.take(key) }

// beginExecution starts the execution's span, a child of the starter's (from the event's
// headers, or its traceparent field), and returns the event with the span's traceparent, which
// Decide stores in the execution's record.
func (c *Coordinator) beginExecution(ctx context.Context, ev *messages.StartExecution) *messages.StartExecution {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		ctx = telemetry.WithTraceParent(ctx, ev.TraceParent)
	}
	sctx, span := c.tel.Tracer.Start(ctx, "jetflow.execution "+ev.Function, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(telemetry.KeyExecution.String(ev.ExecutionID), telemetry.KeyFunction.String(ev.Function)))
	c.spans.put(ev.ExecutionID, span)
	if !span.IsRecording() {
		return ev
	}
	cp := *ev
	cp.TraceParent = telemetry.TraceParent(sctx)
	return &cp
}

// endExecution ends the execution's span, if this coordinator holds it, and counts the end.
func (c *Coordinator) endExecution(ctx context.Context, x *messages.Execution) {
	c.tel.ExecutionsEnded.Add(ctx, 1, metric.WithAttributes(telemetry.KeyFunction.String(x.Function), telemetry.KeyStatus.String(x.Status.String())))
	span := c.spans.take(x.ID)
	if span == nil {
		return
	}
	span.SetAttributes(telemetry.KeyStatus.String(x.Status.String()))
	if x.Status != messages.ExecutionSucceeded && x.Error != nil {
		span.SetStatus(codes.Error, x.Error.Type+": "+x.Error.Message)
	}
	span.End()
}

// beginBatch starts the batch's span, a child of the invocation that opened it, and stores its
// traceparent in b.
func (c *Coordinator) beginBatch(ctx context.Context, b *messages.Batch, req messages.ParallelRequest) {
	sctx, span := c.tel.Tracer.Start(ctx, "jetflow.parallel "+req.Name, trace.WithAttributes(
		telemetry.KeyExecution.String(b.ExecutionID), telemetry.KeyOp.String(b.OpID), telemetry.KeyName.String(req.Name),
		attribute.Int("jetflow.batch.size", req.Config.N), attribute.Int("jetflow.batch.max_concurrency", req.Config.MaxConcurrency)))
	if !span.IsRecording() {
		return
	}
	b.TraceParent = telemetry.TraceParent(sctx)
	c.spans.put(batchKey(b.ExecutionID, b.OpID), span)
}

// endBatch ends the batch's span, if this coordinator holds it.
func (c *Coordinator) endBatch(b *messages.Batch) {
	span := c.spans.take(batchKey(b.ExecutionID, b.OpID))
	if span == nil {
		return
	}
	span.SetAttributes(attribute.String("jetflow.batch.completion_reason", b.Reason.String()),
		attribute.Int("jetflow.batch.succeeded", b.Succeeded), attribute.Int("jetflow.batch.failed", b.Failed),
		attribute.Int("jetflow.batch.started", b.Next))
	span.End()
}

// observeInFlight registers the gauge of branches in flight per running batch (dispatched and not
// finished: the part of its window in use), read from the batches this coordinator drives.
func (c *Coordinator) observeInFlight() error {
	_, err := c.tel.Meter.Int64ObservableGauge("jetflow.batch.in_flight",
		metric.WithDescription("branches dispatched and not finished, per running batch (jetflow.batch) of this coordinator"),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			c.mu.Lock()
			parts := make([]*partition, 0, len(c.parts))
			for _, p := range c.parts {
				parts = append(parts, p)
			}
			c.mu.Unlock()
			for _, p := range parts {
				p.batches.each(func(key string, cb *cachedBatch) {
					b := cb.state
					o.Observe(int64(b.Next-b.Succeeded-b.Failed), metric.WithAttributes(telemetry.KeyBatch.String(key),
						telemetry.KeyFunction.String(b.Function), attribute.Int("jetflow.batch.max_concurrency", b.Config.MaxConcurrency)))
				})
			}
			return nil
		}))
	return err
}
