package examples

import (
	"fmt"
	"time"

	"github.com/jetflow/jetflow/durable"
	"github.com/jetflow/jetflow/worker"
)

// Order is the input of the order workflow.
type Order struct {
	ID       string  `msgpack:"id" json:"id"`
	Customer string  `msgpack:"customer" json:"customer"`
	Items    []Item  `msgpack:"items" json:"items"`
	Pickup   float64 `msgpack:"pickupSeconds" json:"pickupSeconds"` // how long to wait for the carrier
}

// Item is one line of an order.
type Item struct {
	SKU      string `msgpack:"sku" json:"sku"`
	Quantity int    `msgpack:"quantity" json:"quantity"`
	Cents    int    `msgpack:"cents" json:"cents"`
}

// Receipt is the result of the order workflow.
type Receipt struct {
	OrderID     string `msgpack:"orderId" json:"orderId"`
	Reservation string `msgpack:"reservation" json:"reservation"`
	Charge      string `msgpack:"charge" json:"charge"`
	TotalCents  int    `msgpack:"totalCents" json:"totalCents"`
	Tracking    string `msgpack:"tracking" json:"tracking"`
	Status      string `msgpack:"status" json:"status"`
}

// OrderFunction is the name the order workflow is registered under.
const OrderFunction = "order-workflow"

// OrderWorkflow reserves stock, charges the customer, ships in a child context (pack, label),
// waits durably for the carrier's pickup, and confirms. Each step runs once, whatever crashes.
func OrderWorkflow(ctx durable.Context, o Order) (Receipt, error) {
	if len(o.Items) == 0 {
		return Receipt{}, fmt.Errorf("order %s has no items", o.ID)
	}
	total := 0
	for _, it := range o.Items {
		total += it.Quantity * it.Cents
	}
	reservation, err := durable.Step(ctx, "reserve-inventory", func(sc durable.StepContext) (string, error) {
		sc.Logger().Info("reserving stock", "order", o.ID, "lines", len(o.Items))
		return "rsv-" + o.ID, nil
	})
	if err != nil {
		return Receipt{}, err
	}
	charge, err := durable.Step(ctx, "charge-payment", func(sc durable.StepContext) (string, error) {
		return fmt.Sprintf("ch-%s-%d", o.ID, total), nil
	}, durable.WithSemantics(durable.AtMostOncePerRetry))
	if err != nil {
		return Receipt{}, err
	}
	tracking, err := durable.RunInChildContext(ctx, "ship", func(ctx durable.Context) (string, error) {
		box, err := durable.Step(ctx, "pack", func(durable.StepContext) (string, error) {
			return fmt.Sprintf("box of %d lines", len(o.Items)), nil
		})
		if err != nil {
			return "", err
		}
		return durable.Step(ctx, "print-label", func(durable.StepContext) (string, error) {
			return "TRK-" + o.ID + " (" + box + ")", nil
		})
	})
	if err != nil {
		return Receipt{}, err
	}
	pickup := time.Duration(o.Pickup * float64(time.Second))
	if pickup <= 0 {
		pickup = time.Second
	}
	if err := durable.Wait(ctx, "await-pickup", pickup); err != nil {
		return Receipt{}, err
	}
	status, err := durable.Step(ctx, "confirm", func(durable.StepContext) (string, error) {
		return "shipped", nil
	})
	if err != nil {
		return Receipt{}, err
	}
	ctx.Logger().Info("order complete", "order", o.ID)
	return Receipt{OrderID: o.ID, Reservation: reservation, Charge: charge, TotalCents: total, Tracking: tracking, Status: status}, nil
}

// Register registers every example handler on w.
func Register(w *worker.Worker) {
	worker.Register(w, OrderFunction, OrderWorkflow)
	worker.Register(w, CheckServicesFunction, CheckServices)
	worker.Register(w, RaceFunction, Race)
	worker.Register(w, TolerantFunction, Tolerant)
	worker.Register(w, NestedFunction, Nested)
	worker.Register(w, MapFunction, MapOrders)
	worker.Register(w, FanOutFunction, FanOut)
}

// Demo is one example execution that `jetflow demo` runs.
type Demo struct {
	Title    string
	Function string
	Input    any
}

// Demos are the example executions `jetflow demo` runs, in order.
func Demos() []Demo {
	return []Demo{
		{
			Title:    "order workflow: steps, a child context and a durable wait",
			Function: OrderFunction,
			Input: Order{ID: "A-1001", Customer: "ada", Pickup: 1, Items: []Item{
				{SKU: "keyboard", Quantity: 1, Cents: 8900}, {SKU: "cable", Quantity: 2, Cents: 900},
			}},
		},
		{Title: "check-services: a Parallel of three steps", Function: CheckServicesFunction, Input: "A-1001"},
		{Title: "first-successful race: the slower mirrors are abandoned", Function: RaceFunction, Input: "dataset.tar"},
		{Title: "tolerated failure: a Map that accepts one failed notification", Function: TolerantFunction, Input: "order shipped"},
		{Title: "nested parallel: regions, then services in each", Function: NestedFunction, Input: ""},
		{Title: "map over items: price orders two at a time", Function: MapFunction, Input: []Order{
			{ID: "A-1", Items: []Item{{SKU: "pen", Quantity: 3, Cents: 150}}},
			{ID: "A-2", Items: []Item{{SKU: "ink", Quantity: 1, Cents: 900}, {SKU: "pad", Quantity: 2, Cents: 300}}},
			{ID: "A-3", Items: []Item{{SKU: "cap", Quantity: 5, Cents: 20}}},
		}},
	}
}
