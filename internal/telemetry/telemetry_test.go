package telemetry

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

func TestTraceContextRoundTrips(t *testing.T) {
	require.Empty(t, TraceParent(context.Background()), "no span, no traceparent")
	require.Nil(t, Header(""))
	h := nats.Header{}
	Inject(context.Background(), h)
	require.Empty(t, h, "no span, no header")

	tp := sdktrace.NewTracerProvider()
	ctx, span := tp.Tracer("t").Start(context.Background(), "s")
	defer span.End()
	want := span.SpanContext()

	s := TraceParent(ctx)
	require.Regexp(t, `^00-[0-9a-f]{32}-[0-9a-f]{16}-01$`, s)
	got := trace.SpanContextFromContext(WithTraceParent(context.Background(), s))
	require.Equal(t, want.TraceID(), got.TraceID())
	require.Equal(t, want.SpanID(), got.SpanID())
	require.True(t, got.IsRemote())

	Inject(ctx, h)
	require.Equal(t, s, h.Get("traceparent"))
	require.Equal(t, want.SpanID(), trace.SpanContextFromContext(Extract(context.Background(), h)).SpanID())
	require.Equal(t, s, Header(s).Get("traceparent"))
	require.False(t, trace.SpanContextFromContext(WithTraceParent(context.Background(), "garbage")).IsValid())
}
