package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"

	"github.com/jetflow/jetflow/client"
	"github.com/jetflow/jetflow/messages"
)

func listCmd() *cobra.Command {
	var o client.ListOptions
	var since time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List recent executions with their status",
		Long: "List executions, the most recently started first. Filters combine: --function, --status\n" +
			"(RUNNING, SUCCEEDED, FAILED, CANCELLED, TIMED_OUT) and --since (a duration: started within it).",
		Example: "  jetflow list --status RUNNING\n  jetflow list --function order-workflow --since 1h --limit 100 --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Status = strings.ToUpper(o.Status)
			if _, ok := messages.ParseExecutionStatus(o.Status); o.Status != "" && !ok {
				return &exitError{exitUsage, fmt.Errorf("--status %s: want RUNNING, SUCCEEDED, FAILED, CANCELLED or TIMED_OUT", o.Status)}
			}
			if since > 0 {
				o.Since = time.Now().Add(-since)
			}
			return withClient(cmd, time.Minute, func(ctx context.Context, cl *client.Client) error {
				xs, err := cl.List(ctx, o)
				if err != nil {
					return err
				}
				if asJSON {
					enc := json.NewEncoder(cmd.OutOrStdout())
					enc.SetIndent("", "  ")
					if xs == nil {
						xs = []client.Summary{}
					}
					return enc.Encode(xs)
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "EXECUTION\tFUNCTION\tSTATUS\tSTARTED\tDURATION\tERROR")
				for _, x := range xs {
					d := "-"
					if x.EndedAt != nil {
						d = x.EndedAt.Sub(x.CreatedAt).Round(time.Millisecond).String()
					}
					e := ""
					if x.Error != nil {
						e = x.Error.Type + ": " + x.Error.Message
						if len(e) > 60 {
							e = e[:57] + "..."
						}
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", x.ID, x.Function, x.Status, x.CreatedAt.Format(time.DateTime), d, e)
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().StringVar(&o.Function, "function", "", "only executions of this function")
	cmd.Flags().StringVar(&o.Status, "status", "", "only executions in this status")
	cmd.Flags().DurationVar(&since, "since", 0, "only executions started within this long (e.g. 15m)")
	cmd.Flags().IntVar(&o.Limit, "limit", 20, "at most this many (negative: all)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func watchCmd() *cobra.Command {
	var timeout time.Duration
	var plain bool
	cmd := &cobra.Command{
		Use:   "watch EXECUTION_ID",
		Short: "Show a live progress bar per Parallel and Map of an execution until it ends",
		Long: "Watch a running execution: one bar per Parallel or Map — branches done, failed and in\n" +
			"flight, of N — updated as branches finish, until the execution ends. On a terminal the bars\n" +
			"redraw in place; otherwise (or with --plain) a line is printed for every change, at most\n" +
			"twice a second. Exit code: 0 if the execution succeeded, 3 if it did not.",
		Example: "  jetflow watch 5PRY3xEUfRwL1jTy3uAm2b",
		Args:    usageArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd, timeout, func(ctx context.Context, cl *client.Client) error {
				out := cmd.OutOrStdout()
				var v view
				if f, ok := out.(*os.File); ok && !plain && term.IsTerminal(int(f.Fd())) && hasWidth(f) {
					v = newBarView(ctx, out)
				} else {
					v = &lineView{w: out}
				}
				var last client.Progress
				err := cl.Watch(ctx, args[0], func(p client.Progress) {
					last = p
					v.update(p)
				})
				v.close(last)
				if err != nil {
					return err
				}
				if last.Status != "SUCCEEDED" {
					ee := &client.ExecutionError{ExecutionID: last.ID, Function: last.Function, Status: last.Status}
					if last.Error != nil {
						ee.ErrorType, ee.Message = last.Error.Type, last.Error.Message
					}
					return ee
				}
				return nil
			})
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", time.Hour, "how long to watch")
	cmd.Flags().BoolVar(&plain, "plain", false, "print lines, not bars, even on a terminal")
	return cmd
}

// hasWidth reports whether the terminal has a size (a pseudo-terminal may have none, and bars
// need one).
func hasWidth(f *os.File) bool {
	w, _, err := term.GetSize(int(f.Fd()))
	return err == nil && w > 0
}

// view draws an execution's progress.
type view interface {
	update(client.Progress)
	close(last client.Progress)
}

// lineView prints a line per batch whose figures changed, at most every lineEvery, and the last
// state whatever the time.
type lineView struct {
	w       io.Writer
	shown   map[string]client.BatchProgress
	status  string
	lastOut time.Time
	pending *client.Progress
}

const lineEvery = 500 * time.Millisecond

func (v *lineView) update(p client.Progress) {
	if time.Since(v.lastOut) < lineEvery && p.Status == v.status {
		v.pending = &p
		return
	}
	v.print(p)
}

func (v *lineView) print(p client.Progress) {
	v.pending = nil
	v.lastOut = time.Now()
	if v.shown == nil {
		v.shown = map[string]client.BatchProgress{}
		fmt.Fprintf(v.w, "execution %s  %s\n", p.ID, p.Function)
	}
	stamp := time.Now().Format("15:04:05.000")
	for _, b := range p.Batches {
		if old, ok := v.shown[b.OpID]; ok && old == b {
			continue
		}
		v.shown[b.OpID] = b
		fmt.Fprintf(v.w, "%s  %s\n", stamp, batchLine(b, 30))
	}
	if p.Status != v.status {
		v.status = p.Status
		fmt.Fprintf(v.w, "%s  execution %s\n", stamp, p.Status)
	}
}

func (v *lineView) close(last client.Progress) {
	if v.pending != nil {
		v.print(*v.pending)
	}
	if last.Error != nil {
		fmt.Fprintf(v.w, "error: %s: %s\n", last.Error.Type, last.Error.Message)
	}
}

// batchLine is one batch as text: name, a bar of width characters, and its figures.
func batchLine(b client.BatchProgress, width int) string {
	filled := 0
	if b.Total > 0 {
		filled = b.Done() * width / b.Total
	}
	bar := strings.Repeat("#", filled) + strings.Repeat(".", width-filled)
	s := fmt.Sprintf("%-20s [%s] %d/%d done  %d failed  %d in flight", batchTitle(b), bar, b.Done(), b.Total, b.Failed, b.InFlight)
	if b.Completed {
		s += "  " + b.Reason
	}
	return s
}

func batchTitle(b client.BatchProgress) string {
	name := b.Name
	if name == "" {
		name = "(unnamed)"
	}
	return fmt.Sprintf("%s %s#%s", name, strings.ToLower(b.Kind), b.OpID)
}

// barView redraws one mpb bar per batch in place.
type barView struct {
	p      *mpb.Progress
	mu     sync.Mutex
	bars   map[string]*mpb.Bar
	latest map[string]client.BatchProgress
	w      io.Writer
}

func newBarView(ctx context.Context, w io.Writer) *barView {
	return &barView{p: mpb.NewWithContext(ctx, mpb.WithOutput(w), mpb.WithAutoRefresh(), mpb.WithRefreshRate(100*time.Millisecond)),
		bars: map[string]*mpb.Bar{}, latest: map[string]client.BatchProgress{}, w: w}
}

func (v *barView) title(op string) string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return batchTitle(v.latest[op])
}

func (v *barView) figures(op string) string {
	v.mu.Lock()
	defer v.mu.Unlock()
	b := v.latest[op]
	s := fmt.Sprintf("%d/%d done  %d failed  %d in flight", b.Done(), b.Total, b.Failed, b.InFlight)
	if b.Completed {
		s += "  " + b.Reason
	}
	return s
}

func (v *barView) update(p client.Progress) {
	for _, b := range p.Batches {
		v.mu.Lock()
		v.latest[b.OpID] = b
		v.mu.Unlock()
		bar := v.bars[b.OpID]
		if bar == nil {
			op := b.OpID
			bar = v.p.AddBar(int64(max(b.Total, 1)),
				mpb.PrependDecorators(decor.Any(func(decor.Statistics) string { return v.title(op) }, decor.WC{W: 24, C: decor.DindentRight})),
				mpb.AppendDecorators(decor.Any(func(decor.Statistics) string { return v.figures(op) })))
			v.bars[b.OpID] = bar
		}
		bar.SetTotal(int64(max(b.Total, 1)), false)
		bar.SetCurrent(int64(b.Done()))
		if b.Completed {
			bar.SetTotal(-1, true) // complete where it stands (a batch may complete early)
		}
	}
}

func (v *barView) close(last client.Progress) {
	for _, bar := range v.bars {
		if !bar.Completed() {
			bar.Abort(false)
		}
	}
	v.p.Wait()
	fmt.Fprintf(v.w, "execution %s %s\n", last.ID, last.Status)
	if last.Error != nil {
		fmt.Fprintf(v.w, "error: %s: %s\n", last.Error.Type, last.Error.Message)
	}
}
