package conformance

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// Observed is what a run of a case produced.
type Observed struct {
	Outcome   *Outcome // nil if the execution failed
	ExecError error    // the execution's error, if it failed
	Rec       *Recorder
}

// Check compares a run with the case's expectations and returns every difference.
func Check(c Case, obs Observed) []string {
	var diffs []string
	add := func(format string, args ...any) { diffs = append(diffs, fmt.Sprintf(format, args...)) }
	e := c.Expected

	if e.Execution != nil {
		if e.Execution.Status == "FAILED" {
			if obs.ExecError == nil {
				add("execution: want FAILED, got SUCCEEDED")
			} else if e.Execution.Error != nil && !strings.Contains(obs.ExecError.Error(), e.Execution.Error.Message) {
				add("execution error: want it to contain %q, got %q", e.Execution.Error.Message, obs.ExecError.Error())
			}
		} else if obs.ExecError != nil {
			add("execution: want %s, got error %v", e.Execution.Status, obs.ExecError)
		}
	}
	if o := obs.Outcome; o != nil {
		diffs = append(diffs, compareOutcome(e, *o)...)
	}
	if rec := obs.Rec; rec != nil {
		diffs = append(diffs, compareRecord(c, rec)...)
	}
	return diffs
}

func compareOutcome(e Expected, o Outcome) []string {
	var diffs []string
	add := func(format string, args ...any) { diffs = append(diffs, fmt.Sprintf(format, args...)) }
	eq := func(what string, want, got any) {
		if !reflect.DeepEqual(want, got) {
			add("%s: want %v, got %v", what, want, got)
		}
	}
	if e.Status != "" {
		eq("status", e.Status, o.Status)
	}
	if e.CompletionReason != "" {
		eq("completionReason", e.CompletionReason, o.CompletionReason)
	}
	if e.HasFailure != nil {
		eq("hasFailure", *e.HasFailure, o.HasFailure)
	}
	for _, c := range []struct {
		what string
		want *int
		got  int
	}{{"successCount", e.SuccessCount, o.SuccessCount}, {"failureCount", e.FailureCount, o.FailureCount},
		{"startedCount", e.StartedCount, o.StartedCount}, {"totalCount", e.TotalCount, o.TotalCount}} {
		if c.want != nil {
			eq(c.what, *c.want, c.got)
		}
	}
	if len(e.Results) > 0 {
		want := value(e.Results)
		if !sameJSON(want, o.Results) {
			add("results: want %s, got %s", short(want), short(o.Results))
		}
	}
	if e.Items != nil {
		diffs = append(diffs, compareItems(e.Items, o.Items)...)
	}
	return diffs
}

func compareItems(want []ExpectedItem, got []Item) []string {
	var diffs []string
	if len(want) != len(got) {
		return []string{fmt.Sprintf("items: want %d, got %d", len(want), len(got))}
	}
	for i, w := range want {
		g := got[i]
		if w.Index != g.Index || w.Status != g.Status {
			diffs = append(diffs, fmt.Sprintf("item %d: want #%d %s, got #%d %s", i, w.Index, w.Status, g.Index, g.Status))
			continue
		}
		if len(w.Result) > 0 {
			var s string
			if json.Unmarshal(w.Result, &s) == nil && lenRE.MatchString(s) {
				n, _ := strconv.Atoi(lenRE.FindStringSubmatch(s)[1])
				if gs, ok := g.Result.(string); !ok || len(gs) != n {
					diffs = append(diffs, fmt.Sprintf("item %d: want a string of %d bytes, got %s", i, n, short(g.Result)))
				}
			} else if want := value(w.Result); !sameJSON(want, g.Result) {
				diffs = append(diffs, fmt.Sprintf("item %d result: want %s, got %s", i, short(want), short(g.Result)))
			}
		}
		if w.ErrorMessage != "" && !strings.Contains(g.ErrorMessage, w.ErrorMessage) {
			diffs = append(diffs, fmt.Sprintf("item %d error: want it to contain %q, got %q", i, w.ErrorMessage, g.ErrorMessage))
		}
	}
	return diffs
}

func compareRecord(c Case, rec *Recorder) []string {
	var diffs []string
	e := c.Expected
	rec.mu.Lock()
	defer rec.mu.Unlock()
	// Step bodies run exactly as often as in the reference: once each, or once per attempt.
	for key, want := range e.Executions {
		if strings.HasPrefix(key, "step:") && rec.Executions[key] != want {
			diffs = append(diffs, fmt.Sprintf("executions[%s]: want %d, got %d", key, want, rec.Executions[key]))
		}
	}
	for key, got := range rec.Executions {
		if _, ok := e.Executions[key]; !ok && e.Executions != nil && strings.HasPrefix(key, "step:") {
			diffs = append(diffs, fmt.Sprintf("executions[%s]: ran %d times; the reference never ran it", key, got))
		}
	}
	// Branch functions: where nothing suspends a branch, once each and never more often than in
	// the reference (which re-runs some to rebuild a large result; jetflow never does). jetflow
	// replays a branch after each of its suspensions (a wait, a retry, a nested batch).
	if !suspends(c.Branches) {
		for key, want := range e.Executions {
			if strings.HasPrefix(key, "branch:") && !strings.Contains(key, ".") {
				if got := rec.Executions[key]; got < 1 || got > want {
					diffs = append(diffs, fmt.Sprintf("executions[%s]: want 1 to %d, got %d", key, want, got))
				}
			}
		}
	}
	// The branches that started: the same set; in the same order when they start one at a time.
	if e.BranchesStarted != nil {
		got := slices.Clone(rec.Started)
		want := slices.Clone(e.BranchesStarted)
		if c.Config.MaxConcurrency == nil || *c.Config.MaxConcurrency > 1 {
			slices.Sort(got)
			slices.Sort(want)
		}
		if !slices.Equal(want, got) {
			diffs = append(diffs, fmt.Sprintf("branchesStarted: want %v, got %v", e.BranchesStarted, rec.Started))
		}
	}
	if e.MaxInFlight != nil && rec.MaxInFlight > *e.MaxInFlight {
		diffs = append(diffs, fmt.Sprintf("maxInFlight: reference at most %d, got %d", *e.MaxInFlight, rec.MaxInFlight))
	}
	// jetflow returns exactly the live result after a replay (SEMANTICS.md rule 18).
	if c.AfterWaitS > 0 {
		if len(rec.Observed) < 2 {
			diffs = append(diffs, fmt.Sprintf("afterReplay: the handler saw the result %d times, want 2", len(rec.Observed)))
		} else if !reflect.DeepEqual(rec.Observed[0], rec.Observed[len(rec.Observed)-1]) {
			diffs = append(diffs, "afterReplay: the result after the replay differs from the live one")
		}
	}
	return diffs
}

func suspends(bs []Branch) bool {
	for _, b := range bs {
		if b.WaitS > 0 || b.Nested != nil {
			return true
		}
		for _, s := range b.Steps {
			if s.Retry == "default" {
				return true
			}
		}
	}
	return false
}

func sameJSON(a, b any) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	if err1 != nil || err2 != nil {
		return false
	}
	var na, nb any
	_ = json.Unmarshal(ja, &na)
	_ = json.Unmarshal(jb, &nb)
	if na == nil {
		na = []any{}
	}
	if nb == nil {
		nb = []any{}
	}
	return reflect.DeepEqual(na, nb)
}

func short(v any) string {
	b, _ := json.Marshal(v)
	if len(b) > 120 {
		return string(b[:120]) + "…"
	}
	return string(b)
}
