package tests

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/client"
	"github.com/jetflow/jetflow/durable"
	"github.com/jetflow/jetflow/durabletest"
)

type Order struct {
	ID    string
	Items int
}

type Receipt struct {
	OrderID string
	Total   int
	Steps   []string
}

func TestStepsRunAndReturnTheResult(t *testing.T) {
	env := durabletest.New(t)
	var bodies atomic.Int32
	durabletest.Register(env, "order", func(ctx durable.Context, o Order) (Receipt, error) {
		price, err := durable.Step(ctx, "price", func(durable.StepContext) (int, error) {
			bodies.Add(1)
			return 10 * o.Items, nil
		})
		if err != nil {
			return Receipt{}, err
		}
		charged, err := durable.Step(ctx, "charge", func(durable.StepContext) (string, error) {
			bodies.Add(1)
			return fmt.Sprintf("charged %d", price), nil
		})
		if err != nil {
			return Receipt{}, err
		}
		return Receipt{OrderID: o.ID, Total: price, Steps: []string{charged}}, nil
	})
	got, err := durabletest.Run[Receipt](env, "order", Order{ID: "o-1", Items: 3})
	require.NoError(t, err)
	require.Equal(t, Receipt{OrderID: "o-1", Total: 30, Steps: []string{"charged 30"}}, got)
	require.Equal(t, int32(2), bodies.Load())
}

func TestFailedExecutionReturnsTheHandlersError(t *testing.T) {
	env := durabletest.New(t)
	durabletest.Register(env, "fails", func(ctx durable.Context, _ string) (string, error) {
		return "", errors.New("out of stock")
	})
	_, err := durabletest.Run[string](env, "fails", "x")
	var ee *client.ExecutionError
	require.ErrorAs(t, err, &ee)
	require.Equal(t, "out of stock", ee.Message)
	require.Equal(t, "errors.errorString", ee.ErrorType)
	require.Equal(t, "fails", ee.Function)
}

func TestStepRetriesThenSucceeds(t *testing.T) {
	env := durabletest.New(t)
	var attempts atomic.Int32
	fast := durable.RetryPolicy{MaxAttempts: 4, InitialInterval: 20 * time.Millisecond, MaxInterval: 50 * time.Millisecond}
	durabletest.Register(env, "flaky", func(ctx durable.Context, _ string) (int, error) {
		return durable.Step(ctx, "call", func(sc durable.StepContext) (int, error) {
			attempts.Add(1)
			if sc.Attempt() < 3 {
				return 0, fmt.Errorf("attempt %d: unavailable", sc.Attempt())
			}
			return sc.Attempt(), nil
		}, durable.WithRetry(fast))
	})
	got, err := durabletest.Run[int](env, "flaky", "")
	require.NoError(t, err)
	require.Equal(t, 3, got)
	require.Equal(t, int32(3), attempts.Load())
}
