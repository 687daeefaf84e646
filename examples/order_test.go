package examples_test

import (
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/jetflow/jetflow/client"
	"github.com/jetflow/jetflow/durabletest"
	"github.com/jetflow/jetflow/examples"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, durabletest.KnownLeaks()...) }

func TestOrderWorkflow(t *testing.T) {
	env := durabletest.New(t)
	durabletest.Register(env, examples.OrderFunction, examples.OrderWorkflow)
	got, err := durabletest.Run[examples.Receipt](env, examples.OrderFunction, examples.Order{
		ID: "T-1", Pickup: 0.05, Items: []examples.Item{{SKU: "a", Quantity: 2, Cents: 250}, {SKU: "b", Quantity: 1, Cents: 99}},
	})
	require.NoError(t, err)
	require.Equal(t, examples.Receipt{OrderID: "T-1", Reservation: "rsv-T-1", Charge: "ch-T-1-599", TotalCents: 599,
		Tracking: "TRK-T-1 (box of 2 lines)", Status: "shipped"}, got)

	_, err = durabletest.Run[examples.Receipt](env, examples.OrderFunction, examples.Order{ID: "T-2"})
	var ee *client.ExecutionError
	require.ErrorAs(t, err, &ee)
	require.Equal(t, "order T-2 has no items", ee.Message)
}
