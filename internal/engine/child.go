package engine

import (
	"fmt"
	"time"

	"github.com/jetflow/jetflow/messages"
)

// RunChild runs fn in a child context whose operations are numbered under this one, and
// checkpoints its outcome; on replay of a finished child, fn does not run.
func (c *Context) RunChild(name string, fn func(*Context) ([]byte, error)) ([]byte, error) {
	inv := c.inv
	inv.stopped()
	op := c.nextOp()
	r, err := inv.visit(c, op, messages.OpChild, name)
	if err != nil {
		return nil, err
	}
	if r == nil {
		r = c.commit(&messages.Checkpoint{OpID: op, OpKind: messages.OpChild, Name: name,
			Status: messages.OpStarted, StartedAt: inv.now().UnixNano()}, nil)
	}
	for !r.cp.Status.Terminal() {
		child := c.child(op + "-")
		out, err := fn(child)
		child.cancel()
		inv.stopped() // a non-determinism inside, or a stop, is not the child's outcome
		inv.interrupted(c, op)
		cp := &messages.Checkpoint{OpID: op, OpKind: messages.OpChild, Name: name,
			StartedAt: r.cp.StartedAt, EndedAt: inv.now().UnixNano()}
		if err != nil {
			cp.Status, cp.Error = messages.OpFailed, Info(err)
		} else {
			cp.Status, cp.Result = messages.OpSucceeded, out
		}
		r = c.commit(cp, r)
	}
	if r.cp.Status == messages.OpFailed {
		return nil, childError(name, r.cp.Error)
	}
	return r.cp.Result, nil
}

// Wait suspends the invocation until d has passed; the timer is durable and the invocation holds
// no worker meanwhile.
func (c *Context) Wait(name string, d time.Duration) error {
	inv := c.inv
	inv.stopped()
	op := c.nextOp()
	r, err := inv.visit(c, op, messages.OpWait, name)
	if err != nil {
		return err
	}
	if r == nil {
		if d <= 0 {
			return fmt.Errorf("durable: Wait %q: duration must be positive, got %s", name, d)
		}
		now := inv.now()
		r = c.commit(&messages.Checkpoint{OpID: op, OpKind: messages.OpWait, Name: name,
			Status: messages.OpPending, FireAt: now.Add(d).UnixNano(), StartedAt: now.UnixNano()}, nil)
	}
	if r.cp.Status != messages.OpSucceeded {
		c.suspend(messages.TimerRequest{OpID: op, FireAt: r.cp.FireAt, Kind: messages.TimerWait})
	}
	return nil
}
