package tests

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetflow/jetflow/durable"
	"github.com/jetflow/jetflow/durabletest"
)

// spanTree indexes exported spans by id.
type spanTree struct {
	spans map[trace.SpanID]tracetest.SpanStub
}

func (st spanTree) parent(s tracetest.SpanStub) (tracetest.SpanStub, bool) {
	p, ok := st.spans[s.Parent.SpanID()]
	return p, ok
}

// path is the names from the root down to s, joined by " > ".
func (st spanTree) path(s tracetest.SpanStub) string {
	names := []string{s.Name}
	for p, ok := st.parent(s); ok; p, ok = st.parent(p) {
		names = append([]string{p.Name}, names...)
	}
	return strings.Join(names, " > ")
}

func attr(s tracetest.SpanStub, key attribute.Key) string {
	for _, kv := range s.Attributes {
		if kv.Key == key {
			return kv.Value.String()
		}
	}
	return ""
}

// One trace spans a nested Parallel run across two workers: the client's start, the execution,
// each invocation, each parallel, each branch and each step, parented in that order through NATS
// headers and the records; replayed steps emit no second span.
func TestTraceOfANestedParallelAcrossWorkers(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer func() { _ = mp.Shutdown(context.Background()) }()
	env := durabletest.New(t, durabletest.WithWorkers(2), durabletest.WithTracerProvider(tp), durabletest.WithMeterProvider(mp))

	var mu sync.Mutex
	ranOn := map[string]bool{}
	durabletest.Register(env, "nested", func(ctx durable.Context, _ string) (int, error) {
		if _, err := durable.Step(ctx, "prepare", func(durable.StepContext) (int, error) { return 1, nil }); err != nil {
			return 0, err
		}
		inner := func(i int) durable.Branch[int] {
			return durable.Branch[int]{Func: func(ctx durable.Context) (int, error) {
				res, err := durable.Parallel(ctx, fmt.Sprintf("inner-%d", i), []durable.Branch[int]{
					{Func: func(ctx durable.Context) (int, error) {
						return durable.Step(ctx, "leaf", func(sc durable.StepContext) (int, error) {
							mu.Lock()
							ranOn[trace.SpanContextFromContext(sc).TraceID().String()] = true
							mu.Unlock()
							return 1, nil
						})
					}},
					{Func: func(ctx durable.Context) (int, error) {
						return durable.Step(ctx, "leaf", func(durable.StepContext) (int, error) { return 1, nil })
					}},
				}, durable.WithPlacement(durable.PlacementFleet)) // across workers, as the name says
				if err != nil {
					return 0, err
				}
				return res.SuccessCount(), nil
			}}
		}
		res, err := durable.Parallel(ctx, "outer", []durable.Branch[int]{inner(0), inner(1), inner(2)},
			durable.WithPlacement(durable.PlacementFleet))
		if err != nil {
			return 0, err
		}
		return durable.Step(ctx, "finish", func(durable.StepContext) (int, error) { return res.SuccessCount(), nil })
	})
	got, err := durabletest.Run[int](env, "nested", "")
	require.NoError(t, err)
	require.Equal(t, 3, got)

	start := "jetflow.start nested > jetflow.execution nested"
	root := start + " > jetflow.invocation nested"
	outerBranch := root + " > jetflow.parallel outer > jetflow.branch 2[%d]"
	want := map[string]int{
		"jetflow.start nested": 1,
		start:                  1,
		// The first run (up to the outer batch) and the run resumed after it.
		root:                               2,
		root + " > jetflow.step prepare":   1, // not again on the resumed run: replayed
		root + " > jetflow.step finish":    1,
		root + " > jetflow.parallel outer": 1,
		fmt.Sprintf(outerBranch, 0):        2, // its first run, and its run resumed after its inner batch
		fmt.Sprintf(outerBranch, 1):        2,
		fmt.Sprintf(outerBranch, 2):        2,
		fmt.Sprintf(outerBranch, 0) + " > jetflow.parallel inner-0": 1,
		fmt.Sprintf(outerBranch, 1) + " > jetflow.parallel inner-1": 1,
		fmt.Sprintf(outerBranch, 2) + " > jetflow.parallel inner-2": 1,
	}
	for i := range 3 {
		for j := range 2 {
			leaf := fmt.Sprintf(outerBranch, i) + fmt.Sprintf(" > jetflow.parallel inner-%d > jetflow.branch 2-%d-1[%d]", i, i+1, j)
			want[leaf] = 1
			want[leaf+" > jetflow.step leaf"] = 1
		}
	}
	// Spans end as their work ends — the execution's when its end is stored, the last
	// invocation's just after it reports — so wait for all of them.
	total := 0
	for _, n := range want {
		total += n
	}
	var spans tracetest.SpanStubs
	eventually(t, func() bool { spans = exp.GetSpans(); return len(spans) >= total }, "every span to end")

	tree := spanTree{spans: map[trace.SpanID]tracetest.SpanStub{}}
	traces := map[trace.TraceID]bool{}
	for _, s := range spans {
		tree.spans[s.SpanContext.SpanID()] = s
		traces[s.SpanContext.TraceID()] = true
	}
	require.Len(t, traces, 1, "one trace for the whole execution")
	require.Len(t, ranOn, 1, "a step body's context carries the trace")
	count := map[string]int{}
	for _, s := range spans {
		count[tree.path(s)]++
	}
	require.Equal(t, want, count)

	for _, s := range spans {
		if strings.HasPrefix(s.Name, "jetflow.branch") || strings.HasPrefix(s.Name, "jetflow.invocation") {
			require.Equal(t, trace.SpanKindConsumer, s.SpanKind)
		}
		if s.Name == "jetflow.parallel outer" {
			require.Equal(t, "ALL_COMPLETED", attr(s, "jetflow.batch.completion_reason"))
			require.Equal(t, "3", attr(s, "jetflow.batch.succeeded"))
		}
	}

	// Metrics: executions by status, tasks timed by kind.
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	names := map[string]bool{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			names[m.Name] = true
			if m.Name == "jetflow.executions.ended" {
				sum := m.Data.(metricdata.Sum[int64])
				require.Len(t, sum.DataPoints, 1)
				status, _ := sum.DataPoints[0].Attributes.Value("jetflow.status")
				require.Equal(t, "SUCCEEDED", status.AsString())
				require.EqualValues(t, 1, sum.DataPoints[0].Value)
			}
		}
	}
	for _, n := range []string{"jetflow.executions.started", "jetflow.executions.ended", "jetflow.task.duration", "jetflow.task.latency", "jetflow.tasks.queued"} {
		require.True(t, names[n], "metric %s missing; have %v", n, names)
	}
}

// An inline batch is traced inside the invocation that runs it: the batch, each branch, each
// step. With no tracer installed, nothing is traced and the same handler runs the same.
func TestTraceOfAnInlineBatch(t *testing.T) {
	handler := func(ctx durable.Context, _ string) (int, error) {
		res, err := durable.Map(ctx, "few", []int{1, 2, 3}, func(ctx durable.Context, item, _ int) (int, error) {
			return durable.Step(ctx, "double", func(durable.StepContext) (int, error) { return 2 * item, nil })
		}, durable.WithPlacement(durable.PlacementInline))
		if err != nil {
			return 0, err
		}
		return res.SuccessCount(), nil
	}
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	env := durabletest.New(t, durabletest.WithTracerProvider(tp))
	durabletest.Register(env, "inline-traced", handler)
	got, err := durabletest.Run[int](env, "inline-traced", "")
	require.NoError(t, err)
	require.Equal(t, 3, got)

	batch := "jetflow.start inline-traced > jetflow.execution inline-traced > jetflow.invocation inline-traced > jetflow.parallel few"
	want := map[string]int{batch: 1}
	for i := range 3 {
		branch := fmt.Sprintf("%s > jetflow.branch 1[%d]", batch, i)
		want[branch], want[branch+" > jetflow.step double"] = 1, 1
	}
	var spans tracetest.SpanStubs
	eventually(t, func() bool { spans = exp.GetSpans(); return len(spans) >= len(want)+3 }, "every span to end")
	tree := spanTree{spans: map[trace.SpanID]tracetest.SpanStub{}}
	for _, s := range spans {
		tree.spans[s.SpanContext.SpanID()] = s
	}
	count := map[string]int{}
	for _, s := range spans {
		if p := tree.path(s); strings.HasPrefix(p, batch) {
			count[p]++
		}
	}
	require.Equal(t, want, count)

	untraced := durabletest.New(t)
	durabletest.Register(untraced, "inline-traced", handler)
	got, err = durabletest.Run[int](untraced, "inline-traced", "")
	require.NoError(t, err)
	require.Equal(t, 3, got)
}
