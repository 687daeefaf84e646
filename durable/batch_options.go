package durable

import (
	"fmt"
	"reflect"

	"github.com/jetflow/jetflow/messages"
)

// BatchOption configures a Parallel or Map.
type BatchOption func(*batchOpts)

type batchOpts struct {
	maxConcurrency *int
	completion     CompletionConfig
	namer          any // func(I, int) string
	namerItemType  reflect.Type
	nesting        NestingMode
	placement      Placement
}

// CompletionConfig is a batch's completion policy. Nil fields are unset; the zero value is the
// default, AllSuccessful(). Thresholds combine: whichever test fires first ends the batch.
type CompletionConfig struct {
	MinSuccessful              *int
	ToleratedFailureCount      *int
	ToleratedFailurePercentage *float64 // 0–100
}

// NestingMode says whether each branch gets its own recorded context.
type NestingMode int

const (
	// NestingNested (the default) shows each branch as its own context in the operation tree.
	NestingNested NestingMode = iota
	// NestingFlat shows the branches' operations directly under the batch. The BatchResult is the
	// same; jetflow records one outcome per branch either way, as the event that counts it.
	NestingFlat
)

// Placement says where a batch's branches run.
type Placement int

const (
	// PlacementAuto (the default) runs a small batch — at most the worker's InlineBranches, 16
	// unless configured — inline, and a larger one on the fleet.
	PlacementAuto Placement = iota
	// PlacementInline runs every branch on the worker that reaches the batch, inside its
	// invocation: no task, no coordinator round trip, and the handler goes on without a replay.
	// Each branch's outcome is still checkpointed as it finishes, and a crash resumes from there.
	PlacementInline
	// PlacementFleet dispatches every branch as a task of its own, so that the fleet's workers
	// share them (long or heavy branches).
	PlacementFleet
)

// WithPlacement says where the branches run. A batch keeps where its first run placed it (a
// batch on the fleet has a record from its start; an inline one has none until it completes).
func WithPlacement(p Placement) BatchOption { return func(o *batchOpts) { o.placement = p } }

// WithMaxConcurrency caps the branches in flight at once across the whole fleet (n >= 1; unset =
// unlimited, that is, the fleet's capacity).
func WithMaxConcurrency(n int) BatchOption { return func(o *batchOpts) { o.maxConcurrency = &n } }

// WithCompletion sets the completion policy.
func WithCompletion(c CompletionConfig) BatchOption { return func(o *batchOpts) { o.completion = c } }

// WithItemNamer names Map items (Map only).
func WithItemNamer[I any](f func(item I, index int) string) BatchOption {
	return func(o *batchOpts) {
		o.namer = f
		o.namerItemType = reflect.TypeFor[I]()
	}
}

// WithNesting sets the nesting mode.
func WithNesting(m NestingMode) BatchOption { return func(o *batchOpts) { o.nesting = m } }

// AllSuccessful is the default: every branch must succeed; the first failure ends the batch.
func AllSuccessful() CompletionConfig { return CompletionConfig{} }

// AllCompleted runs every branch whatever fails.
func AllCompleted() CompletionConfig {
	n := 100.0
	return CompletionConfig{ToleratedFailurePercentage: &n}
}

// FirstSuccessful ends the batch at the first success (= MinSuccessful(1)).
func FirstSuccessful() CompletionConfig { return MinSuccessful(1) }

// MinSuccessful ends the batch once n branches succeeded.
func MinSuccessful(n int) CompletionConfig { return CompletionConfig{MinSuccessful: &n} }

// ToleratedFailureCount ends the batch once more than n branches failed.
func ToleratedFailureCount(n int) CompletionConfig {
	return CompletionConfig{ToleratedFailureCount: &n}
}

// ToleratedFailurePercentage ends the batch once more than p% of the branches given failed.
func ToleratedFailurePercentage(p float64) CompletionConfig {
	return CompletionConfig{ToleratedFailurePercentage: &p}
}

// batchOptions applies and validates opts (SEMANTICS.md rule 12): an invalid setting is an error
// naming the operation and the setting, before anything is recorded.
func batchOptions(kind, name string, opts []BatchOption) (*batchOpts, error) {
	o := &batchOpts{}
	for _, opt := range opts {
		if opt != nil {
			opt(o)
		}
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("durable: %s %q: %s", kind, name, fmt.Sprintf(format, args...))
	}
	if o.maxConcurrency != nil && *o.maxConcurrency < 1 {
		return nil, bad("MaxConcurrency must be at least 1, got %d", *o.maxConcurrency)
	}
	c := o.completion
	if c.MinSuccessful != nil && *c.MinSuccessful < 1 {
		return nil, bad("MinSuccessful must be at least 1, got %d", *c.MinSuccessful)
	}
	if c.ToleratedFailureCount != nil && *c.ToleratedFailureCount < 0 {
		return nil, bad("ToleratedFailureCount must not be negative, got %d", *c.ToleratedFailureCount)
	}
	if p := c.ToleratedFailurePercentage; p != nil && (*p < 0 || *p > 100 || *p != *p) {
		return nil, bad("ToleratedFailurePercentage must be between 0 and 100, got %v", *p)
	}
	if o.nesting != NestingNested && o.nesting != NestingFlat {
		return nil, bad("unknown NestingMode %d", o.nesting)
	}
	if o.placement < PlacementAuto || o.placement > PlacementFleet {
		return nil, bad("unknown Placement %d", o.placement)
	}
	return o, nil
}

func (o *batchOpts) config(n int) messages.BatchConfig {
	cfg := messages.BatchConfig{N: n, MinSuccessful: o.completion.MinSuccessful,
		ToleratedFailureCount: o.completion.ToleratedFailureCount, ToleratedFailurePercentage: o.completion.ToleratedFailurePercentage}
	if o.maxConcurrency != nil {
		cfg.MaxConcurrency = *o.maxConcurrency
	}
	return cfg
}

func (p Placement) String() string {
	switch p {
	case PlacementAuto:
		return "auto"
	case PlacementInline:
		return "inline"
	case PlacementFleet:
		return "fleet"
	}
	return fmt.Sprintf("Placement(%d)", int(p))
}
