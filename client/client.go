package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/vmihailenco/msgpack/v5"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetflow/jetflow/internal/telemetry"
	"github.com/jetflow/jetflow/internal/topology"
	"github.com/jetflow/jetflow/kvstore"
	"github.com/jetflow/jetflow/messages"
)

// Errors.
var (
	// ErrNotFound is an execution id that no execution has.
	ErrNotFound = errors.New("client: execution not found")
	// ErrInputTooLarge is an input that does not fit in one start message.
	ErrInputTooLarge = errors.New("client: input too large")
	// ErrAlreadyEnded is a Cancel of an execution that has ended.
	ErrAlreadyEnded = errors.New("client: execution already ended")
	// ErrCancelled matches (errors.Is) the *ExecutionError of a cancelled execution.
	ErrCancelled = errors.New("client: execution cancelled")
	// ErrTimedOut matches (errors.Is) the *ExecutionError of an execution that timed out.
	ErrTimedOut = errors.New("client: execution timed out")
)

// ExecutionError is an execution that did not succeed: the type name and message of the error
// its handler returned (or "Panic", "NonDeterminismError", ...), or, for an execution stopped from
// outside, "Cancelled" or "TimedOut" (errors.Is(err, ErrCancelled) and ErrTimedOut tell them).
type ExecutionError struct {
	ExecutionID string
	Function    string
	Status      string // FAILED, CANCELLED or TIMED_OUT
	ErrorType   string
	Message     string
	Data        []byte
}

func (e *ExecutionError) Error() string {
	how := "failed"
	switch e.Status {
	case messages.ExecutionCancelled.String():
		how = "was cancelled"
	case messages.ExecutionTimedOut.String():
		how = "timed out"
	}
	return fmt.Sprintf("execution %s (%s) %s: %s: %s", e.ExecutionID, e.Function, how, e.ErrorType, e.Message)
}

// Is makes errors.Is(err, ErrCancelled) and errors.Is(err, ErrTimedOut) work.
func (e *ExecutionError) Is(target error) bool {
	return target == ErrCancelled && e.Status == messages.ExecutionCancelled.String() ||
		target == ErrTimedOut && e.Status == messages.ExecutionTimedOut.String()
}

// Client talks to a running jetflow system over NATS. It is safe for concurrent use.
type Client struct {
	tracer  trace.Tracer
	nc      *nats.Conn
	js      jetstream.JetStream
	execs   *kvstore.Store
	ckpts   *kvstore.Store
	batches *kvstore.Store
}

// Option configures New.
type Option func(*options)

type options struct{ tp trace.TracerProvider }

// WithTracerProvider sends the client's spans (one per Start, the root of the execution's trace)
// to tp. Default: the OpenTelemetry global provider (a no-op unless the program set one).
func WithTracerProvider(tp trace.TracerProvider) Option { return func(o *options) { o.tp = tp } }

// New binds a client to the system reachable through nc, creating jetflow's streams and buckets
// if no service has yet.
func New(nc *nats.Conn, opts ...Option) (*Client, error) {
	if nc == nil {
		return nil, errors.New("client: nil NATS connection")
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.Stream(ctx, messages.EventStream); errors.Is(err, jetstream.ErrStreamNotFound) {
		if err := topology.Provision(ctx, js, topology.Options{}); err != nil {
			return nil, fmt.Errorf("client: %w", err)
		}
	}
	c := &Client{nc: nc, js: js, tracer: telemetry.New(o.tp, nil).Tracer}
	if c.execs, err = kvstore.Open(ctx, js, messages.ExecutionBucket, topology.BlobBucket); err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if c.ckpts, err = kvstore.Open(ctx, js, messages.CheckpointBucket, topology.BlobBucket); err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if c.batches, err = kvstore.Open(ctx, js, messages.BatchBucket, topology.BlobBucket); err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	return c, nil
}

// StartOption configures Start.
type StartOption func(*startOptions)

type startOptions struct {
	name    string
	timeout time.Duration
}

// WithExecutionName makes the start idempotent: the name is the execution id, and starting again
// with the same name returns the same execution (the first start's function and input win). A
// name is 1–128 of [A-Za-z0-9_-].
func WithExecutionName(name string) StartOption { return func(o *startOptions) { o.name = name } }

// WithTimeout ends the execution TIMED_OUT if it has not ended d after the start: its running code
// is cancelled on every worker and nothing more of it is dispatched, as with Cancel. d > 0.
func WithTimeout(d time.Duration) StartOption { return func(o *startOptions) { o.timeout = d } }

// Start starts an execution of function with input (encoded as msgpack) and returns its id once
// the start is stored in JetStream. A function no worker has registered yet is not an error: the
// execution waits in its queue until a worker registers the function.
func (c *Client) Start(ctx context.Context, function string, input any, opts ...StartOption) (id string, err error) {
	ctx, span := c.tracer.Start(ctx, "jetflow.start "+function, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(telemetry.KeyFunction.String(function)))
	defer func() {
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
		}
		span.SetAttributes(telemetry.KeyExecution.String(id))
		span.End()
	}()
	var o startOptions
	for _, opt := range opts {
		opt(&o)
	}
	if err := messages.ValidateFunction(function); err != nil {
		return "", fmt.Errorf("client: start: %w", err)
	}
	if o.timeout < 0 {
		return "", fmt.Errorf("client: start %s: timeout must be positive, got %s", function, o.timeout)
	}
	id = o.name
	generated := id == ""
	if generated {
		id = nuid.Next()
	} else if err := messages.ValidateExecutionID(id); err != nil {
		return "", fmt.Errorf("client: start %s: execution name: %w", function, err)
	}
	in, err := msgpack.Marshal(input)
	if err != nil {
		return "", fmt.Errorf("client: start %s: encode input %T: %w", function, input, err)
	}
	data := messages.MustEncode(&messages.StartExecution{ExecutionID: id, Function: function, Input: in,
		RequestedAt: time.Now().UnixNano(), Timeout: int64(o.timeout), TraceParent: telemetry.TraceParent(ctx), NewID: generated})
	if len(data) > messages.MaxEventSize {
		return "", fmt.Errorf("%w: %s: %d bytes encoded, the most is %d", ErrInputTooLarge, function, len(data), messages.MaxEventSize)
	}
	msg := &nats.Msg{Subject: messages.EventSubject(id, "start"), Data: data, Header: nats.Header{}}
	telemetry.Inject(ctx, msg.Header)
	_, err = c.js.PublishMsg(ctx, msg, jetstream.WithMsgID("start."+id))
	if err != nil {
		return "", fmt.Errorf("client: start %s: %w", function, err)
	}
	return id, nil
}

// CancelOption configures Cancel.
type CancelOption func(*cancelOptions)

type cancelOptions struct{ reason string }

// WithReason is the message the cancelled execution's error carries.
func WithReason(reason string) CancelOption { return func(o *cancelOptions) { o.reason = reason } }

// Cancel stops a running execution: it ends CANCELLED, the Context of every piece of it running on
// any worker is cancelled, and nothing more of it is dispatched. Cancel returns once the request is
// stored; Result then reports the end (an *ExecutionError matching ErrCancelled). An unknown
// execution is ErrNotFound; one that has already ended is ErrAlreadyEnded. Cancelling twice is
// harmless.
func (c *Client) Cancel(ctx context.Context, executionID string, opts ...CancelOption) error {
	var o cancelOptions
	for _, opt := range opts {
		opt(&o)
	}
	if err := messages.ValidateExecutionID(executionID); err != nil {
		return fmt.Errorf("client: cancel: %w", err)
	}
	rec, err := c.Lookup(ctx, executionID)
	if err != nil {
		return fmt.Errorf("client: cancel: %w", err)
	}
	if st, ok := messages.ParseExecutionStatus(rec.Status); ok && st.Terminal() {
		return fmt.Errorf("%w: %s is %s", ErrAlreadyEnded, executionID, rec.Status)
	}
	// Running, or its start not yet taken up: the cancel follows the start on the partition's
	// event stream, so the coordinator applies it after the start either way.
	data := messages.MustEncode(&messages.CancelExecution{ExecutionID: executionID, Reason: o.reason, RequestedAt: time.Now().UnixNano()})
	if _, err := c.js.Publish(ctx, messages.EventSubject(executionID, "cancel"), data, jetstream.WithMsgID("cancel."+executionID)); err != nil {
		return fmt.Errorf("client: cancel %s: %w", executionID, err)
	}
	return nil
}

// read returns the execution's stored state.
func (c *Client) read(ctx context.Context, executionID string) (*messages.Execution, error) {
	e, err := c.execs.Get(ctx, executionID)
	if errors.Is(err, kvstore.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, executionID)
	}
	if err != nil {
		return nil, fmt.Errorf("execution %s: %w", executionID, err)
	}
	x, err := messages.DecodeAs[*messages.Execution](e.Value)
	if err != nil {
		return nil, fmt.Errorf("%w: execution %s: %w", errUnreadable, executionID, err)
	}
	return x, nil
}

var errUnreadable = errors.New("client: unreadable record")

// resultRound is how often Result reads the record again without an announcement.
const resultRound = 2 * time.Second

// Result waits until the execution ends and decodes its result into out (a pointer; nil to
// discard). A failed execution returns *ExecutionError. If ctx ends first, the error names the
// function and says whether any worker has registered it.
func (c *Client) Result(ctx context.Context, executionID string, out any) error {
	var final *messages.Execution
	check := func(e kvstore.Entry) (bool, error) {
		x, err := messages.DecodeAs[*messages.Execution](e.Value)
		if err != nil {
			return false, fmt.Errorf("%w: execution %s: %w", errUnreadable, executionID, err)
		}
		if x.Status.Terminal() {
			final = x
			return true, nil
		}
		return false, nil
	}
	// Subscribe to the end announcement first, then read the record: an end stored before the
	// subscription is read, one stored after is announced. The announcement is best effort (core
	// NATS), so the record is read again every resultRound whatever happens.
	ended := make(chan []byte, 1)
	sub, err := c.nc.Subscribe(messages.EndedSubject(executionID), func(m *nats.Msg) {
		select {
		case ended <- m.Data: // the stored record, when small; else empty
		default:
		}
	})
	if err != nil {
		return fmt.Errorf("client: result of %s: %w", executionID, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	round := time.NewTicker(resultRound)
	defer round.Stop()
	for final == nil {
		// Each read on its own bound: a request lost while the connection fails over must not
		// hold the wait until the caller's deadline.
		rctx, cancel := context.WithTimeout(ctx, resultRound)
		e, err := c.execs.Get(rctx, executionID)
		cancel()
		switch {
		case err == nil:
			if _, err := check(e); err != nil {
				return err
			}
		case ctx.Err() != nil:
			return c.waitError(executionID, ctx.Err())
		case !errors.Is(err, kvstore.ErrNotFound):
			// A transient failure (a server lost, say): try again at the next round.
		}
		if final != nil {
			break
		}
		select {
		case rec := <-ended:
			if x, err := messages.DecodeAs[*messages.Execution](rec); err == nil && x.ID == executionID && x.Status.Terminal() {
				final = x // what the coordinator stored: no need to read it
			}
		case <-round.C:
		case <-ctx.Done():
			return c.waitError(executionID, ctx.Err())
		}
	}
	if final.Status != messages.ExecutionSucceeded {
		ee := &ExecutionError{ExecutionID: final.ID, Function: final.Function, Status: final.Status.String()}
		if final.Error != nil {
			ee.ErrorType, ee.Message, ee.Data = final.Error.Type, final.Error.Message, final.Error.Data
		}
		return ee
	}
	if out == nil || len(final.Result) == 0 {
		return nil
	}
	if err := msgpack.Unmarshal(final.Result, out); err != nil {
		return fmt.Errorf("client: execution %s: decode result into %T: %w", executionID, out, err)
	}
	return nil
}

// waitError explains why a wait for a result ended without one.
func (c *Client) waitError(executionID string, cause error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	e, err := c.execs.Get(ctx, executionID)
	if errors.Is(err, kvstore.ErrNotFound) {
		return fmt.Errorf("client: result of execution %s: not started yet (is a coordinator running?): %w", executionID, cause)
	}
	if err != nil {
		return fmt.Errorf("client: result of execution %s: %w", executionID, cause)
	}
	x, err := messages.DecodeAs[*messages.Execution](e.Value)
	if err != nil {
		return fmt.Errorf("client: result of execution %s: %w", executionID, cause)
	}
	if _, err := c.js.Consumer(ctx, messages.TaskStream, messages.ConsumerName(x.Function)); errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("client: result of execution %s: no worker has registered function %q; the execution waits in its queue until one does: %w",
			executionID, x.Function, cause)
	}
	return fmt.Errorf("client: result of execution %s (function %q, still %s): %w", executionID, x.Function, x.Status, cause)
}

// Execution is an execution's status and operation tree.
type Execution struct {
	ID         string       `json:"id"`
	Function   string       `json:"function"`
	Status     string       `json:"status"` // RUNNING, SUCCEEDED, FAILED, CANCELLED, TIMED_OUT
	Error      *ErrorInfo   `json:"error,omitempty"`
	CreatedAt  time.Time    `json:"createdAt"`
	EndedAt    *time.Time   `json:"endedAt,omitempty"`
	Operations []*Operation `json:"operations"` // the top-level operations, in order
}

// Operation is one durable operation and the operations under it.
type Operation struct {
	ID       string       `json:"id"`
	Kind     string       `json:"kind"` // STEP, WAIT, CONTEXT, PARALLEL, BRANCH
	Name     string       `json:"name,omitempty"`
	Status   string       `json:"status"` // STARTED, PENDING, SUCCEEDED, FAILED
	Attempt  int          `json:"attempt,omitempty"`
	Error    *ErrorInfo   `json:"error,omitempty"`
	Started  *time.Time   `json:"startedAt,omitempty"`
	Ended    *time.Time   `json:"endedAt,omitempty"`
	FireAt   *time.Time   `json:"fireAt,omitempty"` // a pending wait or retry
	Children []*Operation `json:"children,omitempty"`
}

// ErrorInfo is a recorded error.
type ErrorInfo struct {
	Type    string `json:"errorType"`
	Message string `json:"errorMessage"`
}

// Describe returns the execution's status and its operation tree.
func (c *Client) Describe(ctx context.Context, executionID string) (*Execution, error) {
	x, err := c.read(ctx, executionID)
	if err != nil {
		return nil, fmt.Errorf("client: describe: %w", err)
	}
	entries, err := c.ckpts.List(ctx, executionID)
	if err != nil {
		return nil, fmt.Errorf("client: describe %s: %w", executionID, err)
	}
	checkpoints := make([]*messages.Checkpoint, 0, len(entries))
	for _, en := range entries {
		cp, err := messages.DecodeAs[*messages.Checkpoint](en.Value)
		if err != nil {
			return nil, fmt.Errorf("client: describe %s: checkpoint %s: %w", executionID, en.Key, err)
		}
		checkpoints = append(checkpoints, cp)
	}
	out := &Execution{ID: x.ID, Function: x.Function, Status: x.Status.String(), Error: errorInfo(x.Error),
		CreatedAt: time.Unix(0, x.CreatedAt), EndedAt: timePtr(x.EndedAt)}
	out.Operations = operationTree(checkpoints)
	return out, nil
}

// operationTree arranges checkpoints by their ids: an operation "3-2" is the second one inside
// operation "3". A batch "P" has one BRANCH node per branch, "P-<i+1>", holding the branch's
// operations — its status from the branch's outcome record "P.<i>", or STARTED while it runs.
func operationTree(cps []*messages.Checkpoint) []*Operation {
	ops := map[string]*Operation{}
	flat := map[string]bool{}
	node := func(cp *messages.Checkpoint, id string) *Operation {
		op := &Operation{ID: id, Kind: cp.OpKind.String(), Name: cp.Name, Status: cp.Status.String(),
			Attempt: cp.Attempt, Error: errorInfo(cp.Error), Started: timePtr(cp.StartedAt), Ended: timePtr(cp.EndedAt)}
		if cp.Status == messages.OpPending {
			op.FireAt = timePtr(cp.FireAt)
		}
		return op
	}
	// A branch's first-try steps are stored inside its outcome record, and the outcomes that
	// completed an inline batch inside the batch's record (with their steps inside them).
	cps = slices.Clip(cps) // appended to below: never into the caller's array
	for i := 0; i < len(cps); i++ {
		cps = append(cps, cps[i].Inner...)
	}
	for _, cp := range cps {
		if cp.OpKind == messages.OpBranch { // "<op>.<index>.<partition>", or "<op>.<index>" inline
			parts := strings.Split(cp.OpID, ".")
			if len(parts) < 2 {
				continue
			}
			batchOp := parts[0]
			i, err := strconv.Atoi(parts[1])
			if err != nil {
				continue
			}
			id := batchOp + "-" + strconv.Itoa(i+1)
			ops[id] = node(cp, id)
			continue
		}
		ops[cp.OpID] = node(cp, cp.OpID)
		if cp.OpKind == messages.OpParallel && cp.Flat {
			flat[cp.OpID] = true
		}
	}
	// Branches abandoned when their batch completed early: started, and never finished.
	for _, cp := range cps {
		if cp.OpKind != messages.OpParallel || cp.Summary == nil {
			continue
		}
		for i := range cp.Summary.Started {
			id := cp.OpID + "-" + strconv.Itoa(i+1)
			if ops[id] == nil {
				ops[id] = &Operation{ID: id, Kind: messages.OpBranch.String(), Status: messages.OpStarted.String()}
			}
		}
	}
	// Branches that run but have no outcome yet.
	for id := range ops {
		parent := parentOf(id)
		grand := parentOf(parent)
		if parent != "" && ops[parent] == nil && ops[grand] != nil && ops[grand].Kind == messages.OpParallel.String() {
			ops[parent] = &Operation{ID: parent, Kind: messages.OpBranch.String(), Status: messages.OpStarted.String()}
		}
	}
	ids := make([]string, 0, len(ops))
	for id := range ops {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, compareOpIDs)
	var roots []*Operation
	for _, id := range ids {
		op := ops[id]
		parent := parentOf(id)
		if p := ops[parent]; p != nil && p.Kind == messages.OpBranch.String() && flat[parentOf(parent)] {
			parent = parentOf(parent) // NestingFlat: a branch's operations show under the batch
		}
		if p := ops[parent]; p != nil {
			p.Children = append(p.Children, op)
		} else {
			roots = append(roots, op)
		}
	}
	return roots
}

func parentOf(id string) string {
	if i := strings.LastIndexByte(id, '-'); i >= 0 {
		return id[:i]
	}
	return ""
}

// compareOpIDs orders "2" < "2-1" < "2-10" < "10" by their numeric parts.
func compareOpIDs(a, b string) int {
	as, bs := strings.Split(a, "-"), strings.Split(b, "-")
	for i := range min(len(as), len(bs)) {
		if d := len(as[i]) - len(bs[i]); d != 0 {
			return d
		}
		if c := strings.Compare(as[i], bs[i]); c != 0 {
			return c
		}
	}
	return len(as) - len(bs)
}

func errorInfo(e *messages.ErrorInfo) *ErrorInfo {
	if e == nil {
		return nil
	}
	return &ErrorInfo{Type: e.Type, Message: e.Message}
}

func timePtr(ns int64) *time.Time {
	if ns == 0 {
		return nil
	}
	t := time.Unix(0, ns)
	return &t
}
