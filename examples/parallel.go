package examples

import (
	"context"
	"fmt"
	"time"

	"github.com/jetflow/jetflow/durable"
)

// Names of the batch examples.
const (
	CheckServicesFunction = "check-services"
	RaceFunction          = "first-successful-race"
	TolerantFunction      = "tolerated-failure"
	NestedFunction        = "nested-regions"
	MapFunction           = "map-orders"
)

// CheckServices checks inventory, payment and shipping at once, each a durable step, and returns
// the BatchResult (its JSON shape for non-Go callers).
func CheckServices(ctx durable.Context, orderID string) (durable.BatchResult[string], error) {
	check := func(service string) durable.Branch[string] {
		return durable.Branch[string]{Name: service, Func: func(ctx durable.Context) (string, error) {
			return durable.Step(ctx, "check-"+service, func(durable.StepContext) (string, error) {
				return service + " ok for " + orderID, nil
			})
		}}
	}
	return durable.Parallel(ctx, "check-services", []durable.Branch[string]{check("inventory"), check("payment"), check("shipping")})
}

// Race asks three mirrors for the same file and takes the first answer; the slower mirrors are
// abandoned (their contexts are cancelled) and show as STARTED.
func Race(ctx durable.Context, file string) (durable.BatchResult[string], error) {
	mirror := func(name string, latency time.Duration) durable.Branch[string] {
		return durable.Branch[string]{Name: name, Func: func(ctx durable.Context) (string, error) {
			return durable.Step(ctx, "fetch", func(sc durable.StepContext) (string, error) {
				if err := pause(sc, latency); err != nil {
					return "", err
				}
				return fmt.Sprintf("%s from %s in %s", file, name, latency), nil
			})
		}}
	}
	return durable.Parallel(ctx, "race", []durable.Branch[string]{
		mirror("eu-mirror", 300*time.Millisecond), mirror("us-mirror", 20*time.Millisecond), mirror("ap-mirror", 600*time.Millisecond),
	}, durable.WithCompletion(durable.FirstSuccessful()))
}

// Tolerant sends five notifications and accepts one failure: the batch runs to the end
// (ALL_COMPLETED) and reports the failure in its items.
func Tolerant(ctx durable.Context, message string) (durable.BatchResult[string], error) {
	channels := []string{"email", "sms", "push", "pager", "webhook"}
	return durable.Map(ctx, "notify", channels, func(ctx durable.Context, ch string, i int) (string, error) {
		return durable.Step(ctx, "send", func(durable.StepContext) (string, error) {
			if ch == "pager" {
				return "", fmt.Errorf("pager gateway unreachable")
			}
			return ch + ": " + message, nil
		}, durable.WithRetry(durable.RetryPolicy{MaxAttempts: 1}))
	}, durable.WithItemNamer(func(ch string, _ int) string { return ch }),
		durable.WithCompletion(durable.ToleratedFailureCount(1)))
}

// Nested checks two services in each of three regions: a Parallel of Parallels, each with its own
// configuration.
func Nested(ctx durable.Context, _ string) (durable.BatchResult[[]string], error) {
	region := func(name string) durable.Branch[[]string] {
		return durable.Branch[[]string]{Name: name, Func: func(ctx durable.Context) ([]string, error) {
			res, err := durable.Parallel(ctx, "services-"+name, []durable.Branch[string]{
				{Name: "api", Func: func(ctx durable.Context) (string, error) {
					return durable.Step(ctx, "ping-api", func(durable.StepContext) (string, error) { return name + "/api up", nil })
				}},
				{Name: "db", Func: func(ctx durable.Context) (string, error) {
					return durable.Step(ctx, "ping-db", func(durable.StepContext) (string, error) { return name + "/db up", nil })
				}},
			}, durable.WithMaxConcurrency(1))
			if err != nil {
				return nil, err
			}
			return res.Results(), res.ThrowIfError()
		}}
	}
	return durable.Parallel(ctx, "regions", []durable.Branch[[]string]{region("eu"), region("us"), region("ap")})
}

// MapOrders prices each order of a list, two at a time, each item named by its order id.
func MapOrders(ctx durable.Context, orders []Order) (durable.BatchResult[int], error) {
	return durable.Map(ctx, "price-orders", orders, func(ctx durable.Context, o Order, _ int) (int, error) {
		return durable.Step(ctx, "price", func(durable.StepContext) (int, error) {
			total := 0
			for _, it := range o.Items {
				total += it.Quantity * it.Cents
			}
			return total, nil
		})
	}, durable.WithMaxConcurrency(2), durable.WithItemNamer(func(o Order, _ int) string { return o.ID }))
}

func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// FanOutFunction names FanOut.
const FanOutFunction = "fan-out"

// FanOutInput sizes FanOut: N branches, at most MaxConcurrency at once (0: unlimited), each
// taking about WorkMillis; every FailEvery-th branch fails (0: none).
type FanOutInput struct {
	N              int `msgpack:"n" json:"n"`
	MaxConcurrency int `msgpack:"maxConcurrency" json:"maxConcurrency"`
	WorkMillis     int `msgpack:"workMillis" json:"workMillis"`
	FailEvery      int `msgpack:"failEvery" json:"failEvery"`
}

// FanOut is a wide Parallel to watch (`jetflow watch`): N branches of one step each, with all
// failures tolerated, returning how many succeeded.
func FanOut(ctx durable.Context, in FanOutInput) (int, error) {
	if in.N < 0 || in.N > 1_000_000 {
		return 0, fmt.Errorf("fan-out: n must be 0 to 1,000,000, got %d", in.N)
	}
	branches := make([]durable.Branch[int], in.N)
	for i := range branches {
		branches[i] = durable.Branch[int]{Func: func(ctx durable.Context) (int, error) {
			return durable.Step(ctx, "work", func(sc durable.StepContext) (int, error) {
				if err := pause(sc, time.Duration(in.WorkMillis)*time.Millisecond); err != nil {
					return 0, err
				}
				if in.FailEvery > 0 && i%in.FailEvery == in.FailEvery-1 {
					return 0, fmt.Errorf("item %d: simulated failure", i)
				}
				return i, nil
			}, durable.WithRetry(durable.RetryPolicy{MaxAttempts: 1}))
		}}
	}
	// On the fleet whatever its width: this example is for watching branches spread over workers.
	opts := []durable.BatchOption{durable.WithCompletion(durable.AllCompleted()), durable.WithPlacement(durable.PlacementFleet)}
	if in.MaxConcurrency > 0 {
		opts = append(opts, durable.WithMaxConcurrency(in.MaxConcurrency))
	}
	res, err := durable.Parallel(ctx, "fan-out", branches, opts...)
	if err != nil {
		return 0, err
	}
	return res.SuccessCount(), nil
}
