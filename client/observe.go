package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow/jetflow/messages"
)

// Summary is one execution as List shows it.
type Summary struct {
	ID        string     `json:"id"`
	Function  string     `json:"function"`
	Status    string     `json:"status"`
	Error     *ErrorInfo `json:"error,omitempty"`
	CreatedAt time.Time  `json:"createdAt"`
	EndedAt   *time.Time `json:"endedAt,omitempty"`
}

// Record is an execution as stored: its summary and, once it has succeeded, its result (msgpack).
type Record struct {
	Summary
	Result []byte `json:"-"`
}

// StatusPending is the status Lookup reports for an execution whose start is stored but not yet
// taken up by a coordinator.
const StatusPending = "PENDING"

// Lookup returns the execution's record as it is now, without waiting: StatusPending if its start
// is stored and no coordinator has taken it up yet. An unknown id is ErrNotFound.
func (c *Client) Lookup(ctx context.Context, executionID string) (*Record, error) {
	if err := messages.ValidateExecutionID(executionID); err != nil {
		return nil, fmt.Errorf("client: lookup: %w", err)
	}
	x, err := c.read(ctx, executionID)
	if errors.Is(err, ErrNotFound) {
		// The start waits in the event stream until a coordinator folds it into a record.
		var m *jetstream.RawStreamMsg
		stream, serr := c.js.Stream(ctx, messages.EventStream)
		if serr == nil {
			m, serr = stream.GetLastMsgForSubject(ctx, messages.EventSubject(executionID, "start"))
		}
		if serr == nil {
			if st, derr := messages.DecodeAs[*messages.StartExecution](m.Data); derr == nil {
				return &Record{Summary: Summary{ID: st.ExecutionID, Function: st.Function, Status: StatusPending,
					CreatedAt: time.Unix(0, st.RequestedAt)}}, nil
			}
		}
		// Gone from the stream: a coordinator may have stored the record and taken the start
		// between the two reads.
		x, err = c.read(ctx, executionID)
	}
	if err != nil {
		return nil, fmt.Errorf("client: lookup: %w", err)
	}
	return &Record{Summary: summary(x), Result: x.Result}, nil
}

func summary(x *messages.Execution) Summary {
	return Summary{ID: x.ID, Function: x.Function, Status: x.Status.String(), Error: errorInfo(x.Error),
		CreatedAt: time.Unix(0, x.CreatedAt), EndedAt: timePtr(x.EndedAt)}
}

// ListOptions filters List. The zero value lists the 20 most recent executions.
type ListOptions struct {
	Function string    // only this function's executions
	Status   string    // only executions in this status: RUNNING, SUCCEEDED, FAILED, CANCELLED, TIMED_OUT
	Since    time.Time // only executions started at or after this time
	Limit    int       // at most this many, the most recent first; 0: 20; negative: no limit
}

// List returns executions, the most recently started first. It reads every execution record, so
// it is meant for operators, not for a hot path.
func (c *Client) List(ctx context.Context, o ListOptions) ([]Summary, error) {
	if o.Status != "" {
		if _, ok := messages.ParseExecutionStatus(o.Status); !ok {
			return nil, fmt.Errorf("client: list: unknown status %q (want RUNNING, SUCCEEDED, FAILED, CANCELLED or TIMED_OUT)", o.Status)
		}
	}
	if o.Limit == 0 {
		o.Limit = 20
	}
	entries, err := c.execs.ListAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("client: list: %w", err)
	}
	var out []Summary
	for _, e := range entries {
		x, err := messages.DecodeAs[*messages.Execution](e.Value)
		if err != nil {
			continue // not an execution record: nothing to show
		}
		s := summary(x)
		if o.Function != "" && s.Function != o.Function || o.Status != "" && s.Status != o.Status ||
			!o.Since.IsZero() && s.CreatedAt.Before(o.Since) {
			continue
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Summary) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	if o.Limit > 0 && len(out) > o.Limit {
		out = out[:o.Limit]
	}
	return out, nil
}

// Progress is a running execution's state as Watch sees it.
type Progress struct {
	ID       string          `json:"id"`
	Function string          `json:"function"`
	Status   string          `json:"status"`
	Error    *ErrorInfo      `json:"error,omitempty"`
	Batches  []BatchProgress `json:"batches"` // every Parallel and Map opened so far, in operation order
}

// BatchProgress is one Parallel's or Map's progress.
type BatchProgress struct {
	OpID      string `json:"id"`
	Name      string `json:"name,omitempty"`
	Kind      string `json:"kind"` // PARALLEL or MAP
	Total     int    `json:"total"`
	Succeeded int    `json:"succeeded"`
	Failed    int    `json:"failed"`
	InFlight  int    `json:"inFlight"` // dispatched and not finished
	Completed bool   `json:"completed"`
	Reason    string `json:"completionReason,omitempty"`
}

// Done is how many branches have finished.
func (b BatchProgress) Done() int { return b.Succeeded + b.Failed }

// Watch calls fn with the execution's progress at once and again after every change, until the
// execution ends (it returns nil after the last call) or ctx ends. Changes come from watches on
// the execution's records, so fn may be called often: throttle what it draws, not what it gets.
func (c *Client) Watch(ctx context.Context, executionID string, fn func(Progress)) error {
	if err := messages.ValidateExecutionID(executionID); err != nil {
		return fmt.Errorf("client: watch: %w", err)
	}
	x, err := c.read(ctx, executionID)
	if err != nil {
		return fmt.Errorf("client: watch: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type update struct {
		bucket string
		e      jetstream.KeyValueEntry
	}
	updates := make(chan update, 256)
	watch := func(bucket, filter string) error {
		kv, err := c.js.KeyValue(ctx, bucket)
		if err != nil {
			return err
		}
		w, err := kv.Watch(ctx, filter, jetstream.IgnoreDeletes())
		if err != nil {
			return err
		}
		go func() {
			defer func() { _ = w.Stop() }()
			for e := range w.Updates() {
				if e == nil {
					continue // the end of what was stored: live updates follow
				}
				select {
				case updates <- update{bucket, e}:
				case <-ctx.Done():
					return
				}
			}
		}()
		return nil
	}
	// The execution record (its status), its batches (the coordinator's counts) and its
	// operations' own records (names and kinds; branch outcomes have longer keys and are left out).
	for _, w := range []struct{ bucket, filter string }{
		{messages.ExecutionBucket, executionID},
		{messages.BatchBucket, executionID + ".*"},
		{messages.CheckpointBucket, executionID + ".*"},
	} {
		if err := watch(w.bucket, w.filter); err != nil {
			return fmt.Errorf("client: watch %s: %w", executionID, err)
		}
	}
	p := Progress{ID: x.ID, Function: x.Function, Status: x.Status.String(), Error: errorInfo(x.Error)}
	batches := map[string]*BatchProgress{}
	emit := func() {
		p.Batches = p.Batches[:0]
		for _, b := range batches {
			p.Batches = append(p.Batches, *b)
		}
		slices.SortFunc(p.Batches, func(a, b BatchProgress) int { return compareOpIDs(a.OpID, b.OpID) })
		fn(p)
	}
	batch := func(op string) *BatchProgress {
		b := batches[op]
		if b == nil {
			b = &BatchProgress{OpID: op, Kind: messages.OpParallel.String()}
			batches[op] = b
		}
		return b
	}
	fromCheckpoint := func(cp *messages.Checkpoint) {
		if cp.OpKind != messages.OpParallel {
			return
		}
		b := batch(cp.OpID)
		b.Name = cp.Name
		if cp.IsMap {
			b.Kind = "MAP"
		}
		if cp.Batch != nil && b.Total == 0 {
			b.Total = cp.Batch.N
		}
		if cp.Summary != nil { // completed: the summary is final
			b.Completed, b.Reason, b.InFlight = true, cp.Summary.Reason.String(), 0
			b.Succeeded, b.Failed = cp.Summary.Succeeded, cp.Summary.Failed
		}
	}
	fromBatch := func(s *messages.Batch) {
		b := batch(s.OpID)
		if b.Completed && !s.Completed {
			return // an older record, delivered after the batch's summary
		}
		b.Total, b.Succeeded, b.Failed = s.Config.N, s.Succeeded, s.Failed
		b.InFlight = max(0, s.Next-s.Succeeded-s.Failed)
		if s.Completed {
			b.Completed, b.Reason, b.InFlight = true, s.Reason.String(), 0
		}
	}
	// final reads the batches' own records once more: the watches deliver independently, so the
	// execution's end may come before a batch's last change.
	final := func() {
		for op := range batches {
			if e, err := c.ckpts.Get(ctx, messages.CheckpointKey(executionID, op)); err == nil {
				if cp, err := messages.DecodeAs[*messages.Checkpoint](e.Value); err == nil {
					fromCheckpoint(cp)
				}
			}
		}
		emit()
	}
	if x.Status.Terminal() { // ended already: its records as they are
		states, err := c.batches.ListShallow(ctx, executionID) // not the rollups under each batch
		if err != nil {
			return fmt.Errorf("client: watch %s: %w", executionID, err)
		}
		for _, e := range states {
			if s, err := messages.DecodeAs[*messages.Batch](e.Value); err == nil {
				fromBatch(s)
			}
		}
		entries, err := c.ckpts.ListShallow(ctx, executionID) // the operations' records: not branch outcomes
		if err != nil {
			return fmt.Errorf("client: watch %s: %w", executionID, err)
		}
		for _, e := range entries {
			if cp, err := messages.DecodeAs[*messages.Checkpoint](e.Value); err == nil {
				fromCheckpoint(cp)
			}
		}
		emit()
		return nil
	}
	emit()
	for {
		var u update
		select {
		case u = <-updates:
		case <-ctx.Done():
			return fmt.Errorf("client: watch %s: %w", executionID, ctx.Err())
		}
		value, err := c.execs.Unframe(ctx, u.e.Key(), u.e.Value())
		if err != nil {
			continue
		}
		switch u.bucket {
		case messages.ExecutionBucket:
			if x, err := messages.DecodeAs[*messages.Execution](value); err == nil {
				p.Status, p.Error = x.Status.String(), errorInfo(x.Error)
			}
		case messages.BatchBucket:
			if s, err := messages.DecodeAs[*messages.Batch](value); err == nil {
				fromBatch(s)
			}
		case messages.CheckpointBucket:
			if cp, err := messages.DecodeAs[*messages.Checkpoint](value); err == nil {
				fromCheckpoint(cp)
			}
		}
		if st, ok := messages.ParseExecutionStatus(p.Status); ok && st.Terminal() {
			final()
			return nil
		}
		if len(updates) == 0 { // changes that came together are shown together
			emit()
		}
	}
}
