package durable

import "time"

// RetryPolicy says how often and how fast a failed step is tried again.
// RetryPolicy{MaxAttempts: 1} means no retries.
type RetryPolicy struct {
	MaxAttempts        int           // including the first; 0 = default (6)
	InitialInterval    time.Duration // default 5s
	MaxInterval        time.Duration // default 60s
	BackoffCoefficient float64       // default 2; full jitter
	// RetryIf reports whether an error is worth another attempt; nil retries every error.
	// Return false for errors no retry can fix (invalid input, a declined card).
	RetryIf func(error) bool
}

// StepSemantics says what happens to an attempt interrupted by a crash.
type StepSemantics int

const (
	// AtLeastOncePerRetry (the default) runs an interrupted attempt again.
	AtLeastOncePerRetry StepSemantics = iota
	// AtMostOncePerRetry records each attempt before its body runs; an attempt found begun but
	// unfinished after a crash counts as a failed attempt and goes through the retry policy.
	AtMostOncePerRetry
)

// StepOption configures one Step.
type StepOption func(*stepOptions)

type stepOptions struct {
	retry     RetryPolicy
	semantics StepSemantics
}

// WithRetry sets the step's retry policy.
func WithRetry(p RetryPolicy) StepOption { return func(o *stepOptions) { o.retry = p } }

// WithSemantics sets what an interrupted attempt means.
func WithSemantics(s StepSemantics) StepOption { return func(o *stepOptions) { o.semantics = s } }
