package durable_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetflow/jetflow/client"
	"github.com/jetflow/jetflow/coordinator"
	"github.com/jetflow/jetflow/durable"
	"github.com/jetflow/jetflow/internal/embedded"
	"github.com/jetflow/jetflow/worker"
)

// run starts an embedded NATS server, a coordinator and a worker with h registered, runs one
// execution with input, and prints its result. Tests of your own use durabletest instead.
func run[I, O any](h func(durable.Context, I) (O, error), input I) {
	dir, _ := os.MkdirTemp("", "jetflow-example-")
	defer os.RemoveAll(dir)
	srv, err := embedded.Start(embedded.Options{StoreDir: dir})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Shutdown()
	quiet := slog.New(slog.DiscardHandler)
	var conns []*nats.Conn
	connect := func() *nats.Conn {
		nc, _ := nats.Connect(srv.URL())
		conns = append(conns, nc)
		return nc
	}
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	ctx := context.Background()
	c, _ := coordinator.New(connect(), &coordinator.Config{Logger: quiet})
	_ = c.Start(ctx)
	defer func() { _ = c.Stop(ctx) }()
	w, _ := worker.New(connect(), &worker.Config{Logger: quiet})
	worker.Register(w, "example", h)
	_ = w.Start(ctx)
	defer func() { _ = w.Stop(ctx) }()
	cl, _ := client.New(connect())

	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	id, err := cl.Start(rctx, "example", input)
	if err != nil {
		fmt.Println(err)
		return
	}
	var out O
	if err := cl.Result(rctx, id, &out); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(out)
}

func ExampleStep() {
	run(func(ctx durable.Context, orderID string) (string, error) {
		// The body runs once; on every replay the checkpointed result is returned instead.
		charge, err := durable.Step(ctx, "charge", func(sc durable.StepContext) (string, error) {
			return "charged " + orderID, nil
		}, durable.WithRetry(durable.RetryPolicy{MaxAttempts: 3, InitialInterval: 10 * time.Millisecond}))
		if err != nil {
			return "", err
		}
		return charge, nil
	}, "A-1")
	// Output: charged A-1
}

func ExampleWait() {
	run(func(ctx durable.Context, d time.Duration) (string, error) {
		// The handler suspends here and holds no worker; it is replayed when the timer fires.
		if err := durable.Wait(ctx, "cool-off", d); err != nil {
			return "", err
		}
		return "waited", nil
	}, 20*time.Millisecond)
	// Output: waited
}

func ExampleRunInChildContext() {
	run(func(ctx durable.Context, n int) (int, error) {
		return durable.RunInChildContext(ctx, "double", func(ctx durable.Context) (int, error) {
			return durable.Step(ctx, "times-two", func(durable.StepContext) (int, error) { return 2 * n, nil })
		})
	}, 21)
	// Output: 42
}

func ExampleParallel() {
	run(func(ctx durable.Context, _ string) (string, error) {
		check := func(service string, ok bool) durable.Branch[string] {
			return durable.Branch[string]{Name: service, Func: func(ctx durable.Context) (string, error) {
				return durable.Step(ctx, "check-"+service, func(durable.StepContext) (string, error) {
					if !ok {
						return "", errors.New(service + " down")
					}
					return service + " ok", nil
				}, durable.WithRetry(durable.RetryPolicy{MaxAttempts: 1}))
			}}
		}
		res, err := durable.Parallel(ctx, "check-services",
			[]durable.Branch[string]{check("inventory", true), check("payment", false), check("shipping", true)},
			durable.WithMaxConcurrency(2), durable.WithCompletion(durable.ToleratedFailureCount(1)))
		if err != nil {
			return "", err
		}
		return fmt.Sprint(res.Reason, " ", res.Status(), " ", res.Results(), " ", res.FailureCount()), nil
	}, "")
	// Output: ALL_COMPLETED FAILED [inventory ok shipping ok] 1
}

func ExampleMap() {
	run(func(ctx durable.Context, words []string) ([]int, error) {
		res, err := durable.Map(ctx, "lengths", words, func(ctx durable.Context, w string, i int) (int, error) {
			return len(w), nil
		}, durable.WithItemNamer(func(w string, _ int) string { return w }))
		if err != nil {
			return nil, err
		}
		return res.Results(), res.ThrowIfError()
	}, []string{"durable", "parallel", "go"})
	// Output: [7 8 2]
}
