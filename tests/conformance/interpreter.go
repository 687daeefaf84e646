package conformance

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jetflow/jetflow/durable"
)

// Outcome is what an interpreted handler returns: the BatchResult in the terms the cases use.
type Outcome struct {
	Status           string `json:"status"`
	CompletionReason string `json:"completionReason"`
	HasFailure       bool   `json:"hasFailure"`
	SuccessCount     int    `json:"successCount"`
	FailureCount     int    `json:"failureCount"`
	StartedCount     int    `json:"startedCount"`
	TotalCount       int    `json:"totalCount"`
	Results          []any  `json:"results"`
	Items            []Item `json:"items"`
}

// Item is one item of an Outcome.
type Item struct {
	Index        int    `json:"index"`
	Name         string `json:"name"`
	Status       string `json:"status"`
	Result       any    `json:"result"`
	ErrorType    string `json:"errorType"`
	ErrorMessage string `json:"errorMessage"`
}

// Recorder counts what the interpreted handler did, across invocations and workers (which, in a
// test, share one process).
type Recorder struct {
	mu          sync.Mutex
	Executions  map[string]int // "branch:<path>" and "step:<path>/<name>" → bodies run
	Started     []int          // top-level branches in the order they first started
	inFlight    int
	MaxInFlight int       // most top-level branch functions running at once
	Observed    []Outcome // the BatchResult each time the handler got it (live, then replays)
}

func (r *Recorder) count(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.Executions == nil {
		r.Executions = map[string]int{}
	}
	r.Executions[key]++
}

func (r *Recorder) enter(index int, first bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if first {
		r.Started = append(r.Started, index)
	}
	r.inFlight++
	r.MaxInFlight = max(r.MaxInFlight, r.inFlight)
}

func (r *Recorder) leave() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inFlight--
}

func (r *Recorder) observe(o Outcome) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Observed = append(r.Observed, o)
}

// Interpreter builds a case's handler.
type Interpreter struct {
	Case Case
	Rec  *Recorder
	// Scale turns the case's durable waits (seconds) into test durations.
	Scale func(seconds float64) time.Duration
	// Retry is the policy used for "retry": "default": the default policy, scaled down.
	Retry durable.RetryPolicy
}

// Handler is the case's handler: it runs the batch, waits if the case says so, and returns the
// BatchResult as an Outcome (or, with throw_if_error, the first failure).
func (ip *Interpreter) Handler() func(durable.Context, string) (Outcome, error) {
	c := ip.Case
	return func(ctx durable.Context, _ string) (Outcome, error) {
		res, err := ip.batch(ctx, c.Kind == "map", c.Name, c.Config, c.Branches, "", true)
		if err != nil {
			return Outcome{}, err
		}
		out := summarize(res)
		if c.AfterWaitS > 0 {
			ip.Rec.observe(out)
			if err := durable.Wait(ctx, "after", ip.Scale(c.AfterWaitS)); err != nil {
				return Outcome{}, err
			}
		}
		if c.ThrowIfError {
			if err := res.ThrowIfError(); err != nil {
				return Outcome{}, err
			}
		}
		return out, nil
	}
}

func (ip *Interpreter) batch(ctx durable.Context, isMap bool, name *string, cfg Config, branches []Branch, path string,
	top bool) (durable.BatchResult[any], error) {
	opName := ""
	if name != nil {
		opName = *name
	}
	opts := options(cfg)
	run := func(bctx durable.Context, i int) (any, error) {
		key := strconv.Itoa(i)
		if path != "" {
			key = path + "." + key
		}
		ip.Rec.count("branch:" + key)
		if top {
			ip.Rec.mu.Lock()
			first := ip.Rec.Executions["branch:"+key] == 1
			ip.Rec.mu.Unlock()
			ip.Rec.enter(i, first)
			defer ip.Rec.leave()
		}
		return ip.branch(bctx, branches[i], key)
	}
	if isMap {
		named := false
		for _, b := range branches {
			named = named || b.Name != nil
		}
		if named {
			opts = append(opts, durable.WithItemNamer(func(b Branch, i int) string {
				if b.Name != nil {
					return *b.Name
				}
				return "map-item-" + strconv.Itoa(i)
			}))
		}
		return durable.Map(ctx, opName, branches, func(bctx durable.Context, _ Branch, i int) (any, error) { return run(bctx, i) }, opts...)
	}
	bs := make([]durable.Branch[any], len(branches))
	for i, b := range branches {
		bs[i] = durable.Branch[any]{Func: func(bctx durable.Context) (any, error) { return run(bctx, i) }}
		if b.Name != nil {
			bs[i].Name = *b.Name
		}
	}
	return durable.Parallel(ctx, opName, bs, opts...)
}

func (ip *Interpreter) branch(ctx durable.Context, b Branch, key string) (any, error) {
	if b.DelayMs > 0 {
		if err := pause(ctx, time.Duration(b.DelayMs)*time.Millisecond); err != nil {
			return nil, err
		}
	}
	var last any
	for _, s := range b.Steps {
		opts := []durable.StepOption{durable.WithRetry(durable.RetryPolicy{MaxAttempts: 1})}
		if s.Retry == "default" {
			opts = []durable.StepOption{durable.WithRetry(ip.Retry)}
		}
		v, err := durable.Step(ctx, s.Name, func(sc durable.StepContext) (any, error) {
			ip.Rec.count("step:" + key + "/" + s.Name)
			if s.DelayMs > 0 {
				if err := pause(sc, time.Duration(s.DelayMs)*time.Millisecond); err != nil {
					return nil, err
				}
			}
			if s.Fail != nil {
				return nil, errors.New(*s.Fail)
			}
			if s.ResultBytes > 0 {
				return strings.Repeat("x", s.ResultBytes), nil
			}
			return value(s.Result), nil
		}, opts...)
		if err != nil {
			return nil, err
		}
		last = v
	}
	if b.WaitS > 0 {
		if err := durable.Wait(ctx, "wait", ip.Scale(b.WaitS)); err != nil {
			return nil, err
		}
	}
	if b.Block {
		<-ctx.Done() // until abandoned
		return nil, ctx.Err()
	}
	if b.Nested != nil {
		res, err := ip.batch(ctx, false, b.Nested.Name, b.Nested.Config, b.Nested.Branches, key, false)
		if err != nil {
			return nil, err
		}
		last = res.Results()
	}
	if b.Fail != nil {
		return nil, errors.New(*b.Fail)
	}
	if len(b.Result) > 0 {
		return value(b.Result), nil
	}
	return last, nil
}

// pause is a plain delay inside branch code, cut short if the branch is cancelled.
func pause(ctx interface{ Done() <-chan struct{} }, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return errors.New("cancelled")
	}
}

func value(raw json.RawMessage) any {
	if len(raw) == 0 {
		return nil
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return string(raw)
	}
	return expand(v)
}

func options(cfg Config) []durable.BatchOption {
	var opts []durable.BatchOption
	if cfg.MaxConcurrency != nil {
		opts = append(opts, durable.WithMaxConcurrency(*cfg.MaxConcurrency))
	}
	cc := durable.CompletionConfig{MinSuccessful: cfg.MinSuccessful, ToleratedFailureCount: cfg.ToleratedFailureCount,
		ToleratedFailurePercentage: cfg.ToleratedFailurePercentage}
	opts = append(opts, durable.WithCompletion(cc))
	if cfg.Nesting == "FLAT" {
		opts = append(opts, durable.WithNesting(durable.NestingFlat))
	}
	return opts
}

func summarize(r durable.BatchResult[any]) Outcome {
	o := Outcome{Status: r.Status().String(), CompletionReason: r.Reason.String(), HasFailure: r.HasFailure(),
		SuccessCount: r.SuccessCount(), FailureCount: r.FailureCount(), StartedCount: r.StartedCount(),
		TotalCount: r.TotalCount(), Results: r.Results()}
	for _, it := range r.Items {
		item := Item{Index: it.Index, Name: it.Name, Status: it.Status.String(), Result: it.Result}
		if it.Err != nil {
			item.ErrorMessage = it.Err.Error()
			var se *durable.StepError
			var be *durable.BranchError
			switch {
			case errors.As(it.Err, &se):
				item.ErrorType = "StepError"
			case errors.As(it.Err, &be):
				item.ErrorType = "BranchError"
			default:
				item.ErrorType = fmt.Sprintf("%T", it.Err)
			}
		}
		o.Items = append(o.Items, item)
	}
	return o
}
