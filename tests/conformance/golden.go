// Package conformance checks jetflow's Parallel and Map against cases recorded from the reference
// SDK (../shared/reference/aws-golden-public.json). Each case describes a handler in a small
// branch language; Interpreter builds that handler with durable.Parallel and durable.Map, and
// Check compares what it produced with what the reference recorded. The interpreter is general:
// any case in the format runs, not only the recorded ones.
package conformance

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// Case is one recorded case.
type Case struct {
	ID           string   `json:"id"`
	Description  string   `json:"description"`
	Kind         string   `json:"kind"` // parallel, map, special
	Name         *string  `json:"name"`
	Config       Config   `json:"config"`
	Branches     []Branch `json:"branches"`
	AfterWaitS   float64  `json:"after_wait_s"`
	ThrowIfError bool     `json:"throw_if_error"`
	Expected     Expected `json:"expected"`
}

// Config is a batch's configuration in the case language.
type Config struct {
	MaxConcurrency             *int     `json:"maxConcurrency"`
	MinSuccessful              *int     `json:"minSuccessful"`
	ToleratedFailureCount      *int     `json:"toleratedFailureCount"`
	ToleratedFailurePercentage *float64 `json:"toleratedFailurePercentage"`
	Nesting                    string   `json:"nesting"`
	PresentButEmpty            bool     `json:"completionConfigPresentButEmpty"`
}

// Branch is one branch (or map item) in the case language.
type Branch struct {
	Name    *string         `json:"name"`
	DelayMs int             `json:"delay_ms"`
	Steps   []Step          `json:"steps"`
	WaitS   float64         `json:"wait_s"`
	Block   bool            `json:"block"`
	Nested  *Nested         `json:"nested"`
	Fail    *string         `json:"fail"`
	Result  json.RawMessage `json:"result"`
}

// Nested is a Parallel inside a branch.
type Nested struct {
	Name     *string  `json:"name"`
	Config   Config   `json:"config"`
	Branches []Branch `json:"branches"`
}

// Step is a durable step in the case language.
type Step struct {
	Name        string          `json:"name"`
	Result      json.RawMessage `json:"result"`
	ResultBytes int             `json:"result_bytes"`
	DelayMs     int             `json:"delay_ms"`
	Fail        *string         `json:"fail"`
	Retry       string          `json:"retry"` // "none" (default) or "default"
}

// Expected is what the reference produced.
type Expected struct {
	Status           string          `json:"status"`
	CompletionReason string          `json:"completionReason"`
	HasFailure       *bool           `json:"hasFailure"`
	SuccessCount     *int            `json:"successCount"`
	FailureCount     *int            `json:"failureCount"`
	StartedCount     *int            `json:"startedCount"`
	TotalCount       *int            `json:"totalCount"`
	Results          json.RawMessage `json:"results"`
	Items            []ExpectedItem  `json:"items"`
	Execution        *struct {
		Status string `json:"status"`
		Error  *struct {
			Message string `json:"message"`
			Type    string `json:"type"`
		} `json:"error"`
	} `json:"execution"`
	BranchesStarted []int          `json:"branchesStarted"`
	MaxInFlight     *int           `json:"maxInFlight"`
	Executions      map[string]int `json:"executions"`
	AfterReplay     *AfterReplay   `json:"afterReplay"`
}

// ExpectedItem is one item of the expected BatchResult.
type ExpectedItem struct {
	Index        int             `json:"index"`
	Status       string          `json:"status"`
	Result       json.RawMessage `json:"result"`
	ErrorMessage string          `json:"errorMessage"`
}

// AfterReplay is the result the reference returned after a resume.
type AfterReplay struct {
	Status           string         `json:"status"`
	CompletionReason string         `json:"completionReason"`
	SuccessCount     int            `json:"successCount"`
	FailureCount     int            `json:"failureCount"`
	StartedCount     int            `json:"startedCount"`
	TotalCount       int            `json:"totalCount"`
	Items            []ExpectedItem `json:"items"`
}

// Load reads a file of cases.
func Load(path string) ([]Case, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var cases []Case
	if err := json.Unmarshal(b, &cases); err != nil {
		return nil, fmt.Errorf("conformance: %s: %w", path, err)
	}
	return cases, nil
}

var repeatRE = regexp.MustCompile(`^(.+)\*(\d+)$`)

// expand replaces the file's shorthand "x*N" (N repetitions of x) in a JSON value.
func expand(v any) any {
	switch v := v.(type) {
	case string:
		if m := repeatRE.FindStringSubmatch(v); m != nil {
			n, _ := strconv.Atoi(m[2])
			return strings.Repeat(m[1], n)
		}
	case []any:
		for i := range v {
			v[i] = expand(v[i])
		}
	case map[string]any:
		for k := range v {
			v[k] = expand(v[k])
		}
	}
	return v
}

var lenRE = regexp.MustCompile(`^<string len=(\d+)>$`)
