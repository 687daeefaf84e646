package engine

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel/trace"

	"github.com/jetflow/jetflow/messages"
)

// Context is the durable.Context handed to handlers and child contexts.
type Context struct {
	context.Context
	cancel context.CancelFunc
	inv    *Invocation
	prefix string // operation ids of this context start with it: "" at the root, "3-" in child 3
	depth  int    // how many elements of the invocation's path this context is inside
	// scope is the branch this context runs in (nil: not in a branch of this invocation's own:
	// the handler, or on the way to the target branch); via, the inline branches between the
	// invocation's path and this context.
	scope *scope
	via   []messages.BranchRef
	seq   atomic.Int64
	// The logger is made on first use: most contexts (a branch of one step, say) never log.
	logOnce sync.Once
	branch  *messages.BranchRef // the branch this context runs, if it is one: its records say so
	span    trace.Span          // an inline branch's own span, if traced
	parent  *Context
	logger  *slog.Logger
}

func newContext(parent context.Context, inv *Invocation, prefix string) *Context {
	ctx, cancel := context.WithCancel(parent)
	return &Context{Context: ctx, cancel: cancel, inv: inv, prefix: prefix}
}

// sharedContext is newContext for a context that ends with its parent: it has no cancel of its
// own (a branch task's target branch, which ends the invocation when it returns).
func sharedContext(parent context.Context, inv *Invocation, prefix string) *Context {
	return &Context{Context: parent, cancel: noCancel, inv: inv, prefix: prefix}
}

func noCancel() {}

// child returns a context for the operations under op (a child context or a branch), inside
// this one's branch.
func (c *Context) child(prefix string) *Context {
	cc := newContext(c.Context, c.inv, prefix)
	cc.parent, cc.depth, cc.scope, cc.via = c, c.depth, c.scope, c.via
	return cc
}

// ExecutionID is the id of the execution this context belongs to.
func (c *Context) ExecutionID() string { return c.inv.execID }

// Logger logs with the execution id, and drops records while the handler replays.
func (c *Context) Logger() *slog.Logger {
	c.logOnce.Do(func() {
		if c.parent != nil {
			c.logger = c.parent.Logger()
		} else {
			c.logger = slog.New(&replayQuiet{inner: c.inv.logger.Handler(), inv: c.inv}).With("execution", c.inv.execID)
		}
		if b := c.branch; b != nil {
			c.logger = c.logger.With("batch", b.OpID, "branch", b.Index)
		}
	})
	return c.logger
}

// IsReplaying reports whether the handler is still passing checkpointed operations.
func (c *Context) IsReplaying() bool { return c.inv.isReplaying() }

// nextOp returns the id of the next operation in this context: the parent's id plus a sequence
// number, never anything from names.
func (c *Context) nextOp() string {
	return c.prefix + strconv.FormatInt(c.seq.Add(1), 10)
}

// replayQuiet is a slog.Handler that drops records while the invocation replays.
type replayQuiet struct {
	inner slog.Handler
	inv   *Invocation
}

func (h *replayQuiet) Enabled(ctx context.Context, l slog.Level) bool {
	return !h.inv.isReplaying() && h.inner.Enabled(ctx, l)
}
func (h *replayQuiet) Handle(ctx context.Context, r slog.Record) error { return h.inner.Handle(ctx, r) }
func (h *replayQuiet) WithAttrs(as []slog.Attr) slog.Handler {
	return &replayQuiet{inner: h.inner.WithAttrs(as), inv: h.inv}
}
func (h *replayQuiet) WithGroup(name string) slog.Handler {
	return &replayQuiet{inner: h.inner.WithGroup(name), inv: h.inv}
}

// traced says whether code running in ctx is traced: telemetry is on and the span around it
// (the invocation's, a branch's, a batch's) records. Spans inside an untraced invocation are
// not started at all, which saves their allocations on every step.
func (inv *Invocation) traced(ctx context.Context) bool {
	return inv.tel != nil && trace.SpanFromContext(ctx).IsRecording()
}
