package batch

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"github.com/jetflow/jetflow/messages"
)

func ip(n int) *int                      { return &n }
func fp(f float64) *float64              { return &f }
func cfg(n, mc int) messages.BatchConfig { return messages.BatchConfig{N: n, MaxConcurrency: mc} }

type step struct {
	index  int
	failed bool
}

// run opens a batch and applies outcomes in order, returning every decision.
func run(c messages.BatchConfig, steps ...step) (*messages.Batch, []Decision) {
	b, d := Open("x", "fn", messages.ParallelRequest{OpID: "1", Config: c})
	ds := []Decision{d}
	for _, s := range steps {
		ds = append(ds, Apply(b, s.index, s.failed))
	}
	return b, ds
}

func TestDecisions(t *testing.T) {
	ok := func(i int) step { return step{i, false} }
	fail := func(i int) step { return step{i, true} }
	withMin := func(c messages.BatchConfig, m int) messages.BatchConfig { c.MinSuccessful = ip(m); return c }
	withTC := func(c messages.BatchConfig, n int) messages.BatchConfig { c.ToleratedFailureCount = ip(n); return c }
	withTP := func(c messages.BatchConfig, p float64) messages.BatchConfig {
		c.ToleratedFailurePercentage = fp(p)
		return c
	}

	for _, tc := range []struct {
		name   string
		cfg    messages.BatchConfig
		steps  []step
		last   Decision
		next   int
		reason messages.CompletionReason
	}{
		{"empty batch completes at once", cfg(0, 0), nil, Decision{Complete: true, Reason: messages.ReasonAllCompleted}, 0, messages.ReasonAllCompleted},
		{"unlimited dispatches everything", cfg(3, 0), nil, Decision{DispatchFrom: 0, DispatchTo: 3}, 3, 0},
		{"window dispatches up to max", cfg(5, 2), nil, Decision{DispatchFrom: 0, DispatchTo: 2}, 2, 0},
		{"an outcome frees one slot", cfg(5, 2), []step{ok(0)}, Decision{DispatchFrom: 2, DispatchTo: 3}, 3, 0},
		{"all succeed", cfg(2, 0), []step{ok(1), ok(0)}, Decision{Complete: true, Reason: messages.ReasonAllCompleted}, 2, messages.ReasonAllCompleted},
		{"default fails fast", cfg(3, 0), []step{ok(0), fail(1)}, Decision{Complete: true, Reason: messages.ReasonFailureToleranceExceeded}, 3, messages.ReasonFailureToleranceExceeded},
		{"default failure on the last branch is still tolerance exceeded", cfg(2, 0), []step{ok(0), fail(1)}, Decision{Complete: true, Reason: messages.ReasonFailureToleranceExceeded}, 2, messages.ReasonFailureToleranceExceeded},
		{"fail fast leaves later branches unstarted", cfg(3, 1), []step{fail(0)}, Decision{Complete: true, Reason: messages.ReasonFailureToleranceExceeded}, 1, messages.ReasonFailureToleranceExceeded},
		{"tolerated count holds", withTC(cfg(3, 0), 1), []step{fail(0), ok(1), ok(2)}, Decision{Complete: true, Reason: messages.ReasonAllCompleted}, 3, messages.ReasonAllCompleted},
		{"tolerated count exceeded", withTC(cfg(4, 1), 1), []step{fail(0), fail(1)}, Decision{Complete: true, Reason: messages.ReasonFailureToleranceExceeded}, 2, messages.ReasonFailureToleranceExceeded},
		{"percentage equal is not exceeded", withTP(cfg(4, 1), 25), []step{fail(0)}, Decision{DispatchFrom: 1, DispatchTo: 2}, 2, 0},
		{"percentage exceeded", withTP(cfg(4, 1), 25), []step{fail(0), ok(1), fail(2)}, Decision{Complete: true, Reason: messages.ReasonFailureToleranceExceeded}, 3, messages.ReasonFailureToleranceExceeded},
		{"percentage zero fails at the first failure", withTP(cfg(3, 1), 0), []step{fail(0)}, Decision{Complete: true, Reason: messages.ReasonFailureToleranceExceeded}, 1, messages.ReasonFailureToleranceExceeded},
		{"min successful reached", withMin(cfg(3, 1), 1), []step{ok(0)}, Decision{Complete: true, Reason: messages.ReasonMinSuccessfulReached}, 1, messages.ReasonMinSuccessfulReached},
		{"min successful reached by the last is all completed", withMin(cfg(2, 0), 2), []step{ok(0), ok(1)}, Decision{Complete: true, Reason: messages.ReasonAllCompleted}, 2, messages.ReasonAllCompleted},
		{"min successful alone tolerates failures", withMin(cfg(2, 0), 1), []step{fail(0), fail(1)}, Decision{Complete: true, Reason: messages.ReasonAllCompleted}, 2, messages.ReasonAllCompleted},
		{"min successful larger than n never fires", withMin(cfg(2, 0), 5), []step{ok(0), ok(1)}, Decision{Complete: true, Reason: messages.ReasonAllCompleted}, 2, messages.ReasonAllCompleted},
		{"min with count: failure first", withTC(withMin(cfg(5, 1), 3), 1), []step{ok(0), fail(1), fail(2)}, Decision{Complete: true, Reason: messages.ReasonFailureToleranceExceeded}, 3, messages.ReasonFailureToleranceExceeded},
		{"duplicate outcome changes nothing", cfg(3, 1), []step{ok(0), ok(0)}, Decision{}, 2, 0},
		{"outcome of an undispatched branch changes nothing and is early", cfg(3, 1), []step{ok(2)}, Decision{Early: true}, 1, 0},
		{"outcome after completion changes nothing", cfg(2, 0), []step{fail(0), ok(1)}, Decision{}, 2, messages.ReasonFailureToleranceExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, ds := run(tc.cfg, tc.steps...)
			require.Equal(t, tc.last, ds[len(ds)-1])
			require.Equal(t, tc.next, b.Next)
			require.Equal(t, tc.reason, b.Reason)
		})
	}
}

// model is a reference implementation written from SEMANTICS.md rules 4–10 alone, with none of
// the package's code: lists instead of bitmaps, everything recomputed from scratch.
type model struct {
	cfg      messages.BatchConfig
	started  []int
	outcomes map[int]bool // index → failed
	done     bool
	reason   messages.CompletionReason
}

func (m *model) active() []int {
	var a []int
	for _, i := range m.started {
		if _, fin := m.outcomes[i]; !fin {
			a = append(a, i)
		}
	}
	return a
}

func (m *model) evaluate() {
	var succ, fail int
	for _, f := range m.outcomes {
		if f {
			fail++
		} else {
			succ++
		}
	}
	c := m.cfg
	unset := c.MinSuccessful == nil && c.ToleratedFailureCount == nil && c.ToleratedFailurePercentage == nil
	keepGoing := true
	if unset {
		keepGoing = fail == 0
	} else {
		if c.ToleratedFailureCount != nil && fail > *c.ToleratedFailureCount {
			keepGoing = false
		}
		if c.ToleratedFailurePercentage != nil && c.N > 0 && float64(fail)/float64(c.N)*100 > *c.ToleratedFailurePercentage {
			keepGoing = false
		}
	}
	allDone := len(m.outcomes) == c.N
	complete := allDone || (c.MinSuccessful != nil && succ >= *c.MinSuccessful)
	switch {
	case !keepGoing:
		m.done, m.reason = true, messages.ReasonFailureToleranceExceeded
	case allDone:
		m.done, m.reason = true, messages.ReasonAllCompleted
	case complete:
		m.done, m.reason = true, messages.ReasonMinSuccessfulReached
	}
	for !m.done && len(m.started) < c.N && (c.MaxConcurrency == 0 || len(m.active()) < c.MaxConcurrency) {
		m.started = append(m.started, len(m.started))
	}
}

func TestMatchesReferenceModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c := messages.BatchConfig{N: rapid.IntRange(0, 12).Draw(t, "n"), MaxConcurrency: rapid.IntRange(0, 4).Draw(t, "mc")}
		if rapid.Bool().Draw(t, "min?") {
			c.MinSuccessful = ip(rapid.IntRange(1, 14).Draw(t, "min"))
		}
		if rapid.Bool().Draw(t, "tc?") {
			c.ToleratedFailureCount = ip(rapid.IntRange(0, 5).Draw(t, "tc"))
		}
		if rapid.Bool().Draw(t, "tp?") {
			c.ToleratedFailurePercentage = fp(float64(rapid.IntRange(0, 100).Draw(t, "tp")))
		}
		m := &model{cfg: c, outcomes: map[int]bool{}}
		m.evaluate()
		b, d := Open("x", "fn", messages.ParallelRequest{OpID: "1", Config: c})
		dispatched := rangeOf(d)
		maxInFlight := 0
		for {
			require.Equal(t, m.started, dispatched, "dispatched branches differ from the model")
			require.Equal(t, m.done, b.Completed)
			if m.done {
				require.Equal(t, m.reason, b.Reason)
				break
			}
			active := m.active()
			maxInFlight = max(maxInFlight, len(active))
			require.NotEmpty(t, active, "not complete, yet nothing in flight")
			i := rapid.SampledFrom(active).Draw(t, "finishes")
			failed := rapid.Bool().Draw(t, "failed")
			m.outcomes[i] = failed
			m.evaluate()
			d := Apply(b, i, failed)
			dispatched = append(dispatched, rangeOf(d)...)
			// A duplicate of any outcome so far changes nothing.
			var finished []int
			for f := range m.outcomes {
				finished = append(finished, f)
			}
			slices.Sort(finished)
			dup := rapid.SampledFrom(finished).Draw(t, "duplicate")
			before := *b
			require.Equal(t, Decision{}, Apply(b, dup, rapid.Bool().Draw(t, "dupFailed")))
			require.Equal(t, before.Next, b.Next)
			require.Equal(t, before.Succeeded+before.Failed, b.Succeeded+b.Failed)
		}
		if c.MaxConcurrency > 0 {
			require.LessOrEqual(t, maxInFlight, c.MaxConcurrency)
		}
		// The frozen summary says what the model says of every branch.
		s := Summary(b)
		require.Equal(t, len(m.started), s.Started)
		for _, i := range m.started {
			failed, fin := m.outcomes[i]
			require.Equal(t, fin, Bit(s.Done, i))
			require.Equal(t, fin && failed, Bit(s.FailedBits, i))
		}
	})
}

func rangeOf(d Decision) []int {
	var out []int
	for i := d.DispatchFrom; i < d.DispatchTo; i++ {
		out = append(out, i)
	}
	return out
}

func TestBitmap(t *testing.T) {
	var bm []byte
	for _, i := range []int{0, 7, 8, 99999} {
		require.False(t, Bit(bm, i))
		bm = SetBit(bm, i)
		require.True(t, Bit(bm, i))
	}
	require.Len(t, bm, 12500)
	require.False(t, Bit(bm, 1))
	require.False(t, Bit(bm, 100000))
}

func BenchmarkApply(b *testing.B) {
	for b.Loop() {
		bt, _ := Open("x", "fn", messages.ParallelRequest{OpID: "1", Config: cfg(10000, 0)})
		for i := range 10000 {
			Apply(bt, i, false)
		}
	}
}
