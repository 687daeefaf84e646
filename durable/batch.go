package durable

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/jetflow/jetflow/internal/engine"
	"github.com/jetflow/jetflow/messages"
)

// Branch is one branch of a Parallel.
type Branch[O any] struct {
	Name string // optional label; default "parallel-branch-<i>"
	Func func(Context) (O, error)
}

// BranchError is a branch (or map item) that failed with an error other than a step's: the type
// name and message of the error it returned, or "Panic" and the panic message.
type BranchError struct {
	Index     int
	Name      string
	ErrorType string
	Message   string
	Data      []byte
}

func (e *BranchError) Error() string {
	return fmt.Sprintf("branch %d (%s) failed: %s", e.Index, e.Name, e.Message)
}

// ErrorTypeName names the error in records.
func (e *BranchError) ErrorTypeName() string { return "BranchError" }

// Parallel runs branches concurrently across the worker fleet — at most WithMaxConcurrency at
// once, across all workers — until the completion policy (WithCompletion; by default every branch
// must succeed, and the first failure ends the batch) is met. Each branch's outcome is checkpointed
// as it finishes; the handler holds no worker while the branches run, and resumes, on any worker,
// when the batch completes. Branches still running then are abandoned: their Context is cancelled
// and nothing they do later counts.
//
// Branch failures do not make Parallel return an error; they are items of the BatchResult. The
// error is for the operation itself: invalid options (nothing is recorded or started), a replay
// that found a different operation at this position, or the execution being cancelled (or the
// branch that calls it abandoned) before the batch opened — then it wraps context.Canceled.
//
// Each branch runs on some worker by replaying the handler up to this Parallel and then calling
// only that branch's function, so branch functions may capture the handler's local variables —
// provided those are computed deterministically (from the input or from durable operations).
func Parallel[O any](ctx Context, name string, branches []Branch[O], opts ...BatchOption) (BatchResult[O], error) {
	c, err := impl(ctx)
	if err != nil {
		return BatchResult[O]{}, err
	}
	bo, err := batchOptions("Parallel", name, opts)
	if err != nil {
		return BatchResult[O]{}, err
	}
	if bo.namer != nil {
		return BatchResult[O]{}, fmt.Errorf("durable: Parallel %q: WithItemNamer applies to Map only", name)
	}
	fns := make([]engine.BranchFunc, len(branches))
	names := make([]string, len(branches))
	for i, b := range branches {
		if b.Func == nil {
			return BatchResult[O]{}, fmt.Errorf("durable: Parallel %q: branch %d has no Func", name, i)
		}
		names[i] = b.Name
		if names[i] == "" {
			names[i] = "parallel-branch-" + strconv.Itoa(i)
		}
		fns[i] = branchFunc(b.Func)
	}
	return runBatch[O](c, name, bo, false, fns, names)
}

// Map runs fn for each item as the branches of a batch: the same machinery, options and result
// as Parallel, the function receiving the item and its index. Items are named by WithItemNamer,
// else "map-item-<i>".
func Map[I, O any](ctx Context, name string, items []I, fn func(ctx Context, item I, index int) (O, error),
	opts ...BatchOption) (BatchResult[O], error) {
	c, err := impl(ctx)
	if err != nil {
		return BatchResult[O]{}, err
	}
	if fn == nil {
		return BatchResult[O]{}, fmt.Errorf("durable: Map %q: nil function", name)
	}
	bo, err := batchOptions("Map", name, opts)
	if err != nil {
		return BatchResult[O]{}, err
	}
	var namer func(I, int) string
	if bo.namer != nil {
		var ok bool
		if namer, ok = bo.namer.(func(I, int) string); !ok {
			return BatchResult[O]{}, fmt.Errorf("durable: Map %q: WithItemNamer is for items of type %s, not %T",
				name, bo.namerItemType, *new(I))
		}
	}
	fns := make([]engine.BranchFunc, len(items))
	names := make([]string, len(items))
	for i, item := range items {
		if namer != nil {
			names[i] = namer(item, i)
		} else {
			names[i] = "map-item-" + strconv.Itoa(i)
		}
		fns[i] = branchFunc(func(bc Context) (O, error) { return fn(bc, item, i) })
	}
	return runBatch[O](c, name, bo, true, fns, names)
}

func branchFunc[O any](f func(Context) (O, error)) engine.BranchFunc {
	return func(bc *engine.Context) ([]byte, error) {
		out, err := f(bc)
		if err != nil {
			return nil, err
		}
		b, err := msgpack.Marshal(out)
		if err != nil {
			return nil, fmt.Errorf("durable: encode branch result %T: %w", out, err)
		}
		return b, nil
	}
}

func runBatch[O any](c *engine.Context, name string, bo *batchOpts, isMap bool, fns []engine.BranchFunc, names []string) (BatchResult[O], error) {
	cfg := bo.config(len(fns))
	out, err := c.Parallel(engine.BatchSpec{Name: name, Config: cfg, IsMap: isMap, Flat: bo.nesting == NestingFlat,
		Branches: fns, Names: names, Placement: engine.Placement(bo.placement)})
	if err != nil {
		return BatchResult[O]{}, err
	}
	return rebuild[O](out, names)
}

// rebuild turns a completed batch's summary and branch records into its BatchResult: the same
// code path on the first return and on every replay, so both are identical.
func rebuild[O any](out *engine.BatchOutcome, names []string) (BatchResult[O], error) {
	s := out.Summary
	if s == nil {
		return BatchResult[O]{}, fmt.Errorf("durable: completed batch without a summary")
	}
	res := BatchResult[O]{Items: make([]BatchItem[O], 0, s.Started), Reason: CompletionReason(s.Reason)}
	for i := range s.Started {
		item := BatchItem[O]{Index: i, Status: BatchItemStarted}
		if i < len(names) {
			item.Name = names[i]
		}
		if bit(s.Done, i) {
			cp := out.Branch(i)
			if cp == nil {
				return BatchResult[O]{}, fmt.Errorf("durable: branch %d of a completed batch has no outcome record", i)
			}
			if bit(s.FailedBits, i) {
				item.Status = BatchItemFailed
				item.Err = branchError(i, item.Name, cp.Error)
			} else {
				item.Status = BatchItemSucceeded
				if len(cp.Result) > 0 {
					if err := msgpack.Unmarshal(cp.Result, &item.Result); err != nil {
						return BatchResult[O]{}, fmt.Errorf("durable: decode result of branch %d into %T: %w", i, item.Result, err)
					}
				}
			}
		}
		res.Items = append(res.Items, item)
	}
	return res, nil
}

func branchError(i int, name string, info *messages.ErrorInfo) error {
	if info == nil {
		info = &messages.ErrorInfo{Type: "Unknown", Message: "failed without a recorded error"}
	}
	if info.FromStep {
		return &StepError{ErrorType: info.Type, Message: info.Message, Data: info.Data}
	}
	return &BranchError{Index: i, Name: name, ErrorType: info.Type, Message: info.Message, Data: info.Data}
}

func bit(bm []byte, i int) bool { return i/8 < len(bm) && bm[i/8]&(1<<(i%8)) != 0 }

// BatchResult is the outcome of a Parallel or Map: one item per branch that started, in index
// order, and why the batch completed.
type BatchResult[O any] struct {
	Items  []BatchItem[O] // input order; branches never started are absent
	Reason CompletionReason
}

// BatchItem is one branch's outcome.
type BatchItem[O any] struct {
	Index  int
	Name   string
	Status BatchItemStatus
	Result O     // when Succeeded
	Err    error // when Failed: a *StepError or *BranchError with the recorded type and message
}

// BatchItemStatus is a branch's status in a BatchResult.
type BatchItemStatus int

const (
	BatchItemSucceeded BatchItemStatus = iota + 1
	BatchItemFailed
	// BatchItemStarted is a branch abandoned while running, when the batch completed early.
	BatchItemStarted
)

func (s BatchItemStatus) String() string {
	switch s {
	case BatchItemSucceeded:
		return "SUCCEEDED"
	case BatchItemFailed:
		return "FAILED"
	case BatchItemStarted:
		return "STARTED"
	}
	return "BatchItemStatus(" + strconv.Itoa(int(s)) + ")"
}

// CompletionReason says why a batch completed.
type CompletionReason int

const (
	CompletionAllCompleted             = CompletionReason(messages.ReasonAllCompleted)
	CompletionMinSuccessfulReached     = CompletionReason(messages.ReasonMinSuccessfulReached)
	CompletionFailureToleranceExceeded = CompletionReason(messages.ReasonFailureToleranceExceeded)
)

func (r CompletionReason) String() string { return messages.CompletionReason(r).String() }

// Results are the succeeded results in index order (zero values included); never nil.
func (r BatchResult[O]) Results() []O {
	out := make([]O, 0, len(r.Items))
	for _, it := range r.Items {
		if it.Status == BatchItemSucceeded {
			out = append(out, it.Result)
		}
	}
	return out
}

// Errors are the failed items' errors in index order.
func (r BatchResult[O]) Errors() []error {
	var out []error
	for _, it := range r.Items {
		if it.Status == BatchItemFailed {
			out = append(out, it.Err)
		}
	}
	return out
}

func (r BatchResult[O]) filter(s BatchItemStatus) []BatchItem[O] {
	var out []BatchItem[O]
	for _, it := range r.Items {
		if it.Status == s {
			out = append(out, it)
		}
	}
	return out
}

// Succeeded are the items that succeeded.
func (r BatchResult[O]) Succeeded() []BatchItem[O] { return r.filter(BatchItemSucceeded) }

// Failed are the items that failed.
func (r BatchResult[O]) Failed() []BatchItem[O] { return r.filter(BatchItemFailed) }

// Started are the items abandoned while running.
func (r BatchResult[O]) Started() []BatchItem[O] { return r.filter(BatchItemStarted) }

// ThrowIfError returns the first failed item's error in index order, or nil.
func (r BatchResult[O]) ThrowIfError() error {
	for _, it := range r.Items {
		if it.Status == BatchItemFailed {
			return it.Err
		}
	}
	return nil
}

// HasFailure reports whether any item failed.
func (r BatchResult[O]) HasFailure() bool { return r.FailureCount() > 0 }

// Status is BatchItemFailed if any item failed, else BatchItemSucceeded, whatever the reason.
func (r BatchResult[O]) Status() BatchItemStatus {
	if r.HasFailure() {
		return BatchItemFailed
	}
	return BatchItemSucceeded
}

func (r BatchResult[O]) count(s BatchItemStatus) int {
	n := 0
	for _, it := range r.Items {
		if it.Status == s {
			n++
		}
	}
	return n
}

// SuccessCount is the number of items that succeeded.
func (r BatchResult[O]) SuccessCount() int { return r.count(BatchItemSucceeded) }

// FailureCount is the number of items that failed.
func (r BatchResult[O]) FailureCount() int { return r.count(BatchItemFailed) }

// StartedCount is the number of items abandoned while running.
func (r BatchResult[O]) StartedCount() int { return r.count(BatchItemStarted) }

// TotalCount is the number of branches that started (not the number given).
func (r BatchResult[O]) TotalCount() int { return len(r.Items) }

// wireBatch is the form a BatchResult takes outside Go: the shape the JavaScript SDK shows to
// users, in JSON and in msgpack alike.
type wireBatch[O any] struct {
	All              []wireItem[O] `json:"all" msgpack:"all"`
	CompletionReason string        `json:"completionReason" msgpack:"completionReason"`
	Status           string        `json:"status" msgpack:"status"`
	SuccessCount     int           `json:"successCount" msgpack:"successCount"`
	FailureCount     int           `json:"failureCount" msgpack:"failureCount"`
	StartedCount     int           `json:"startedCount" msgpack:"startedCount"`
	TotalCount       int           `json:"totalCount" msgpack:"totalCount"`
}

type wireItem[O any] struct {
	Index  int        `json:"index" msgpack:"index"`
	Name   string     `json:"name,omitempty" msgpack:"name,omitempty"`
	Status string     `json:"status" msgpack:"status"`
	Result *O         `json:"result,omitempty" msgpack:"result,omitempty"`
	Error  *wireError `json:"error,omitempty" msgpack:"error,omitempty"`
}

type wireError struct {
	ErrorType    string `json:"errorType" msgpack:"errorType"`
	ErrorMessage string `json:"errorMessage" msgpack:"errorMessage"`
	Step         bool   `json:"step,omitempty" msgpack:"step,omitempty"` // a step's failure
}

func (r BatchResult[O]) wire() wireBatch[O] {
	w := wireBatch[O]{All: make([]wireItem[O], 0, len(r.Items)), CompletionReason: r.Reason.String(), Status: r.Status().String(),
		SuccessCount: r.SuccessCount(), FailureCount: r.FailureCount(), StartedCount: r.StartedCount(), TotalCount: r.TotalCount()}
	for _, it := range r.Items {
		wi := wireItem[O]{Index: it.Index, Name: it.Name, Status: it.Status.String()}
		switch it.Status {
		case BatchItemSucceeded:
			wi.Result = &it.Result
		case BatchItemFailed:
			_, step := it.Err.(*StepError)
			wi.Error = &wireError{ErrorType: errorType(it.Err), ErrorMessage: errorMessage(it.Err), Step: step}
		}
		w.All = append(w.All, wi)
	}
	return w
}

func (w wireBatch[O]) result() (BatchResult[O], error) {
	r := BatchResult[O]{Items: make([]BatchItem[O], 0, len(w.All))}
	switch w.CompletionReason {
	case "ALL_COMPLETED":
		r.Reason = CompletionAllCompleted
	case "MIN_SUCCESSFUL_REACHED":
		r.Reason = CompletionMinSuccessfulReached
	case "FAILURE_TOLERANCE_EXCEEDED":
		r.Reason = CompletionFailureToleranceExceeded
	default:
		return r, fmt.Errorf("durable: BatchResult: unknown completionReason %q", w.CompletionReason)
	}
	for _, wi := range w.All {
		it := BatchItem[O]{Index: wi.Index, Name: wi.Name}
		switch wi.Status {
		case "SUCCEEDED":
			it.Status = BatchItemSucceeded
			if wi.Result != nil {
				it.Result = *wi.Result
			}
		case "FAILED":
			it.Status = BatchItemFailed
			e := wi.Error
			if e == nil {
				e = &wireError{ErrorType: "Unknown"}
			}
			if e.Step {
				it.Err = &StepError{ErrorType: e.ErrorType, Message: e.ErrorMessage}
			} else {
				it.Err = &BranchError{Index: wi.Index, Name: wi.Name, ErrorType: e.ErrorType, Message: e.ErrorMessage}
			}
		case "STARTED":
			it.Status = BatchItemStarted
		default:
			return r, fmt.Errorf("durable: BatchResult: item %d: unknown status %q", wi.Index, wi.Status)
		}
		r.Items = append(r.Items, it)
	}
	return r, nil
}

// MarshalJSON writes the shape the JavaScript SDK shows to users, so other services and the CLI
// read one format: {"all":[{"index":0,"status":"SUCCEEDED","result":…}, …], "completionReason":…,
// "status":…, "successCount":…, "failureCount":…, "startedCount":…, "totalCount":…}.
func (r BatchResult[O]) MarshalJSON() ([]byte, error) { return json.Marshal(r.wire()) }

// UnmarshalJSON reads what MarshalJSON writes.
func (r *BatchResult[O]) UnmarshalJSON(b []byte) error {
	var w wireBatch[O]
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	res, err := w.result()
	*r = res
	return err
}

// EncodeMsgpack writes the same shape as MarshalJSON, so a handler can return a BatchResult and a
// client in any language reads it as that shape.
func (r BatchResult[O]) EncodeMsgpack(enc *msgpack.Encoder) error { return enc.Encode(r.wire()) }

// DecodeMsgpack reads what EncodeMsgpack writes.
func (r *BatchResult[O]) DecodeMsgpack(dec *msgpack.Decoder) error {
	var w wireBatch[O]
	if err := dec.Decode(&w); err != nil {
		return err
	}
	res, err := w.result()
	*r = res
	return err
}

func errorType(err error) string {
	switch e := err.(type) {
	case *StepError:
		return e.ErrorType
	case *BranchError:
		return e.ErrorType
	case nil:
		return ""
	}
	return engine.TypeName(err)
}

func errorMessage(err error) string {
	switch e := err.(type) {
	case *StepError:
		return e.Message
	case *BranchError:
		return e.Message
	case nil:
		return ""
	}
	return err.Error()
}
