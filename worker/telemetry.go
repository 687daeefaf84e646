package worker

import (
	"context"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetflow/jetflow/internal/telemetry"
	"github.com/jetflow/jetflow/messages"
)

// taskSpan is the span of one task's run, with what its end reports.
type taskSpan struct {
	trace.Span
	kind    string              // handler or branch
	outcome string              // how the run ended (an engine outcome, or "stopped")
	failure *messages.ErrorInfo // the handler's error, when it failed
}

// startSpan begins the span of one task's run under parent (the task header's span context) and
// returns ctx carrying it: the spans of the steps that run are its children, and a batch the run
// opens is traced under it.
func (w *Worker) startSpan(ctx, parent context.Context, task *messages.RunTask, md *jetstream.MsgMetadata) (context.Context, *taskSpan) {
	kind := "handler"
	name := "jetflow.invocation " + task.Function
	if n := len(task.Path); n > 0 {
		kind = "branch"
		last := task.Path[n-1]
		name = "jetflow.branch " + last.OpID + "[" + strconv.Itoa(last.Index) + "]"
	}
	if md != nil {
		w.tel.TaskLatency.Record(ctx, time.Since(md.Timestamp).Seconds(), w.tel.Attrs(
			telemetry.KeyFunction.String(task.Function), telemetry.KeyKind.String(kind)))
	}
	again := md == nil || md.NumDelivered > 1
	if again {
		w.tel.Redeliveries.Add(ctx, 1, w.tel.Attrs(telemetry.KeyFunction.String(task.Function)))
	}
	_, span := w.tel.Tracer.Start(parent, name, trace.WithSpanKind(trace.SpanKindConsumer))
	if span.IsRecording() { // attributes only for a span that keeps them
		span.SetAttributes(telemetry.KeyExecution.String(task.ExecutionID), telemetry.KeyFunction.String(task.Function),
			telemetry.KeyTask.String(task.TaskID), attribute.Bool("jetflow.task.redelivered", again))
		if n := len(task.Path); n > 0 {
			span.SetAttributes(telemetry.KeyOp.String(task.Path[n-1].OpID), telemetry.KeyIndex.Int(task.Path[n-1].Index))
		}
	}
	return trace.ContextWithSpan(ctx, span), &taskSpan{Span: span, kind: kind, outcome: "aborted"}
}

// endSpan ends a task's span and records its duration.
func (w *Worker) endSpan(s *taskSpan, task *messages.RunTask, began time.Time) {
	w.tel.TaskDuration.Record(context.Background(), time.Since(began).Seconds(), w.tel.Attrs(
		telemetry.KeyFunction.String(task.Function), telemetry.KeyKind.String(s.kind), telemetry.KeyOutcome.String(s.outcome)))
	if s.IsRecording() {
		s.SetAttributes(telemetry.KeyOutcome.String(s.outcome))
	}
	if s.failure != nil {
		s.SetStatus(codes.Error, s.failure.Type+": "+s.failure.Message)
	}
	s.End()
}

// observeQueues registers the gauge of tasks waiting per function, read from the consumers of the
// functions this worker registered when the metrics are collected.
func (w *Worker) observeQueues() error {
	_, err := w.tel.Meter.Int64ObservableGauge("jetflow.tasks.queued",
		metric.WithDescription("tasks waiting to be taken, per function (jetflow.function)"),
		metric.WithInt64Callback(func(ctx context.Context, o metric.Int64Observer) error {
			w.mu.Lock()
			cons := make(map[string]jetstream.Consumer, len(w.consuming))
			for f, c := range w.consuming {
				cons[f] = c
			}
			w.mu.Unlock()
			for f, c := range cons {
				ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
				info, err := c.Info(ictx)
				cancel()
				if err != nil {
					continue // unknown this time: no point rather than a wrong one
				}
				o.Observe(int64(info.NumPending), metric.WithAttributes(telemetry.KeyFunction.String(f)))
			}
			return nil
		}))
	return err
}
