package sim

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/jetflow/jetflow/coordinator/batch"
	"github.com/jetflow/jetflow/messages"
)

var (
	seeds     = flag.Int("sim.seeds", 1000, "how many seeds to simulate")
	firstSeed = flag.Uint64("sim.seed", 1, "the first seed (a failing seed replays with -sim.seed=N -sim.seeds=1)")
)

func TestSimulation(t *testing.T) {
	n := *seeds
	if v := os.Getenv("JETFLOW_SIM_SEEDS"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	crashes, duplicates := 0, 0
	for s := *firstSeed; s < *firstSeed+uint64(n); s++ {
		r := simulate(s)
		crashes += r.crashes
		duplicates += r.redelivered
		if len(r.violations) > 0 {
			t.Fatalf("seed %d (replay: go test ./tests/sim -sim.seed=%d -sim.seeds=1):\n  %s", s, s, strings.Join(r.violations, "\n  "))
		}
	}
	t.Logf("%d seeds: %d crashes, %d redeliveries", n, crashes, duplicates)
	if crashes == 0 || duplicates == 0 {
		t.Fatal("the simulation injected no faults")
	}
}

type report struct {
	violations           []string
	crashes, redelivered int
}

func simulate(seed uint64) report {
	rng := rand.New(rand.NewPCG(seed, seed*0x9e3779b97f4a7c15))
	w := &world{rng: rng, dedup: map[string]bool{}, kv: map[string]*entry{}, crash: 0.02 + 0.08*rng.Float64(),
		dup: 0.3 * rng.Float64(), inFlight: map[string]map[int]bool{}, mostFlight: map[string]int{}, batchCache: map[string]cachedBatch{}}
	if os.Getenv("JETFLOW_SIM_TRACE") != "" {
		w.trace = func(format string, args ...any) { fmt.Printf(format+"\n", args...) }
	}
	p := &plan{execs: map[string]*execPlan{}}
	for e := range 1 + rng.IntN(3) {
		id := fmt.Sprintf("x%d", e)
		ep := randomPlan(rng)
		p.execs[id] = ep
		start := &messages.StartExecution{ExecutionID: id, Function: "f"}
		w.queue = append(w.queue, &msg{stream: "evt", data: messages.MustEncode(start)})
		w.dedup["start."+id] = true
		if rng.IntN(4) == 0 { // a client that starts twice
			w.queue = append(w.queue, &msg{stream: "evt", data: messages.MustEncode(start)})
		}
	}
	var rep report
	for steps := 0; steps < 200_000 && len(w.queue) > 0; steps++ {
		w.now++
		if !w.deliver(p) {
			w.now = nextDue(w) // nothing deliverable yet: jump to the next timer
		}
	}
	rep.crashes, rep.redelivered = w.crashes, w.redelivered
	if w.trace != nil {
		for k, e := range w.kv {
			m, _ := messages.Decode(e.value)
			w.trace("kv %s rev %d: %+v", k, e.rev, m)
		}
		for id, ep := range p.execs {
			w.trace("plan %s: %+v fail=%v waits=%v", id, ep.cfg, ep.fail, ep.waits)
		}
	}
	rep.violations = append(rep.violations, w.violations...)
	if len(w.queue) > 0 {
		rep.violations = append(rep.violations, fmt.Sprintf("still %d messages after the step budget", len(w.queue)))
	}
	for id, ep := range p.execs {
		rep.violations = append(rep.violations, check(w, id, ep)...)
	}
	return rep
}

func nextDue(w *world) int64 {
	next := int64(-1)
	for _, m := range w.queue {
		if next < 0 || m.notBefore < next {
			next = m.notBefore
		}
	}
	return max(next, w.now)
}

func randomPlan(rng *rand.Rand) *execPlan {
	n := rng.IntN(7)
	cfg := messages.BatchConfig{N: n, MaxConcurrency: rng.IntN(4)}
	ip := func(v int) *int { return &v }
	if rng.IntN(3) == 0 {
		cfg.MinSuccessful = ip(1 + rng.IntN(5))
	}
	if rng.IntN(3) == 0 {
		cfg.ToleratedFailureCount = ip(rng.IntN(3))
	}
	if rng.IntN(4) == 0 {
		f := float64(rng.IntN(101))
		cfg.ToleratedFailurePercentage = &f
	}
	ep := &execPlan{cfg: cfg, fail: make([]bool, n), waits: make([]bool, n)}
	for i := range n {
		ep.fail[i] = rng.IntN(4) == 0
		ep.waits[i] = rng.IntN(3) == 0
	}
	return ep
}

// check compares an execution's end with its undisturbed run and with the rules.
func check(w *world, id string, ep *execPlan) []string {
	var v []string
	e := w.kv[id]
	if e == nil {
		return []string{id + ": never started"}
	}
	x, _ := messages.DecodeAs[*messages.Execution](e.value)
	if x.Status != messages.ExecutionSucceeded {
		return []string{fmt.Sprintf("%s: ended %s, want SUCCEEDED", id, x.Status)}
	}
	got := string(x.Result)
	if mc := ep.cfg.MaxConcurrency; mc > 0 && w.mostFlight[id] > mc {
		v = append(v, fmt.Sprintf("%s: %d branches in flight at once, MaxConcurrency %d", id, w.mostFlight[id], mc))
	}
	reason, statuses, _ := strings.Cut(got, ":")
	s, f := strings.Count(statuses, "S"), strings.Count(statuses, "F")
	for i, c := range statuses {
		if (c == 'S' && ep.fail[i]) || (c == 'F' && !ep.fail[i]) {
			v = append(v, fmt.Sprintf("%s: branch %d is %c, its outcome was the other", id, i, c))
		}
	}
	// The rules every result keeps, whatever the order of outcomes.
	switch reason {
	case "ALL_COMPLETED":
		if s+f != ep.cfg.N || strings.Contains(statuses, "-") {
			v = append(v, fmt.Sprintf("%s: ALL_COMPLETED with %q", id, statuses))
		}
	case "FAILURE_TOLERANCE_EXCEEDED":
		if !batch.ToleranceExceeded(ep.cfg, f) {
			v = append(v, fmt.Sprintf("%s: FAILURE_TOLERANCE_EXCEEDED with %d failures", id, f))
		}
	case "MIN_SUCCESSFUL_REACHED":
		if ep.cfg.MinSuccessful == nil || s < *ep.cfg.MinSuccessful {
			v = append(v, fmt.Sprintf("%s: MIN_SUCCESSFUL_REACHED with %d successes", id, s))
		}
	default:
		v = append(v, fmt.Sprintf("%s: result %q", id, got))
	}
	// Where the result does not depend on the order of outcomes, it is the undisturbed one.
	if want, ok := undisturbed(ep); ok && got != want {
		v = append(v, fmt.Sprintf("%s: result %q, undisturbed %q", id, got, want))
	}
	return v
}

// undisturbed is the result of a run with no fault, when it does not depend on timing: branches
// one at a time, or a policy that can only complete once every branch finished.
func undisturbed(ep *execPlan) (string, bool) {
	fails, succ := 0, 0
	for _, f := range ep.fail {
		if f {
			fails++
		} else {
			succ++
		}
	}
	orderFree := !batch.ToleranceExceeded(ep.cfg, fails) && (ep.cfg.MinSuccessful == nil || *ep.cfg.MinSuccessful > succ)
	if ep.cfg.MaxConcurrency != 1 && !orderFree {
		return "", false
	}
	b, d := batch.Open("x", "f", messages.ParallelRequest{OpID: "1", Config: ep.cfg})
	for i := 0; !d.Complete; i++ {
		d = batch.Apply(b, i, ep.fail[i])
	}
	out := []byte(b.Reason.String() + ":")
	for i := range b.Next {
		switch {
		case !batch.Bit(b.Done, i):
			out = append(out, '-')
		case batch.Bit(b.FailedBits, i):
			out = append(out, 'F')
		default:
			out = append(out, 'S')
		}
	}
	return string(out), true
}
