package bench

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"
)

// Options choose what to run and against what.
type Options struct {
	NatsURL    string // empty: an embedded server with file storage in a temporary directory
	SyncAlways bool   // embedded server: fsync every write
	Workers    int    // workers in this process; default 2
	Full       bool   // W1 also at N = 100,000
	Workloads  []string
	Progress   io.Writer // progress bars; nil: none
	Logger     *slog.Logger
	// Scale divides every workload's size (tests use it to run the bench quickly); default 1.
	Scale int
	// AckWait is the workers' ack wait: how long a killed worker's tasks wait before another takes
	// them (W5). Default 5s.
	AckWait time.Duration
	// InProcess connects the services, the client and RAW to the embedded server in memory
	// instead of over loopback TCP: the figures of a one-process deployment.
	InProcess bool
	// W3Executions is how many executions W3 runs one after another; default 200 (BENCH.md).
	// More give a CPU profile of W3 enough samples.
	W3Executions int
}

// All lists the workloads in the order they run.
var All = []string{"RAW", "W1", "W2", "W3", "W4", "W5", "W1-sync"}

// Result is one workload's figures.
type Result struct {
	Workload       string  `json:"workload"`
	N              int     `json:"n"`
	Durability     string  `json:"durability"`
	WallMS         float64 `json:"wallMs"`
	BranchesPerSec float64 `json:"branchesPerSec,omitempty"`
	TasksPerSec    float64 `json:"tasksPerSec,omitempty"`
	ExecsPerSec    float64 `json:"executionsPerSec,omitempty"`
	PeakRSSMiB     float64 `json:"peakRssMiB,omitempty"`
	MaxInFlight    int     `json:"maxInFlight,omitempty"`
	P50MS          float64 `json:"p50Ms,omitempty"`
	P99MS          float64 `json:"p99Ms,omitempty"`
	MaxMS          float64 `json:"maxMs,omitempty"`
	StepsRerun     int     `json:"stepsRunTwice"`
	// CPUPerUnitUS is the process's CPU time (user and system, the embedded server included) during
	// the workload, per task (RAW) or branch: less noisy than a rate on a shared host.
	CPUPerUnitUS float64 `json:"cpuUsPerUnit,omitempty"`
	Note         string  `json:"note,omitempty"`
}

// Run runs the chosen workloads and calls report with each result as it is measured.
func Run(ctx context.Context, o Options, report func(Result)) error {
	if o.Workers == 0 {
		o.Workers = 2
	}
	if o.Scale < 1 {
		o.Scale = 1
	}
	if o.AckWait == 0 {
		o.AckWait = 5 * time.Second
	}
	want := o.Workloads
	if len(want) == 0 {
		want = All
	}
	for _, w := range want {
		if !slices.Contains(All, w) {
			return fmt.Errorf("bench: unknown workload %q (have %s)", w, strings.Join(All, ", "))
		}
	}
	durability := "file, default flush"
	if o.SyncAlways {
		durability = "file, sync always"
	}
	if o.NatsURL != "" {
		durability = "external server"
		o.InProcess = false // nothing to reach in memory
	}
	if o.InProcess {
		durability += ", in process"
	}
	sys, err := startSystem(ctx, o)
	if err != nil {
		return err
	}
	defer sys.stop()
	b := &runner{o: o, sys: sys, durability: durability, report: report}
	for _, w := range All {
		if !slices.Contains(want, w) {
			continue
		}
		if err := b.workload(ctx, w); err != nil {
			return fmt.Errorf("bench: %s: %w", w, err)
		}
	}
	return nil
}

type runner struct {
	o          Options
	sys        *system
	durability string
	report     func(Result)
}

func (b *runner) n(n int) int { return max(1, n/b.o.Scale) }

func (b *runner) workload(ctx context.Context, w string) error {
	switch w {
	case "RAW":
		n := b.n(10_000)
		bar := b.bar(n, "RAW")
		resetPeakRSS()
		cpu := cpuTime()
		d, err := raw(ctx, b.sys.url, b.sys.connOptions("bench-raw"), n, func(done int64) { _ = bar.Set64(done) })
		cpu = cpuTime() - cpu
		b.finish(bar)
		if err != nil {
			return err
		}
		b.report(Result{Workload: "RAW", N: n, Durability: b.durability, WallMS: ms(d), TasksPerSec: float64(n) / d.Seconds(),
			CPUPerUnitUS: perUnit(cpu, n)})
	case "W1":
		sizes := []int{1_000, 10_000}
		if b.o.Full {
			sizes = append(sizes, 100_000)
		}
		for _, n := range sizes {
			if err := b.parallel(ctx, "W1", b.n(n), 0, b.durability); err != nil {
				return err
			}
		}
	case "W2":
		return b.parallel(ctx, "W2", b.n(1_000), 10, b.durability)
	case "W3":
		return b.latency(ctx, b.n(cmp.Or(b.o.W3Executions, 200)))
	case "W4":
		return b.concurrent(ctx, b.n(200), 10)
	case "W5":
		return b.withKill(ctx, b.n(10_000))
	case "W1-sync":
		if b.o.NatsURL != "" || b.o.SyncAlways {
			return nil // only meaningful beside the embedded default
		}
		o := b.o
		o.SyncAlways = true
		sys, err := startSystem(ctx, o)
		if err != nil {
			return err
		}
		defer sys.stop()
		d := "file, sync always"
		if o.InProcess {
			d += ", in process"
		}
		sb := &runner{o: o, sys: sys, durability: d, report: b.report}
		return sb.parallel(ctx, "W1", b.n(10_000), 0, sb.durability)
	}
	return nil
}

func (b *runner) parallel(ctx context.Context, name string, n, mc int, durability string) error {
	bar := b.bar(n, fmt.Sprintf("%s N=%d", name, n))
	b.sys.steps.Store(0)
	b.sys.gauge.reset()
	resetPeakRSS()
	stop := b.follow(bar, &b.sys.steps)
	cpu := cpuTime()
	begin := time.Now()
	d, err := b.sys.run(ctx, "bench-parallel", parallelInput{N: n, MaxConcurrency: mc})
	cpu = cpuTime() - cpu
	stop()
	b.finish(bar)
	if err != nil {
		return err
	}
	r := Result{Workload: name, N: n, Durability: durability, WallMS: ms(d), BranchesPerSec: float64(n) / d.Seconds(),
		PeakRSSMiB: peakRSSMiB(), MaxInFlight: b.sys.gauge.reset(), CPUPerUnitUS: perUnit(cpu, n)}
	first, last := time.Unix(0, b.sys.firstStep.Load()), time.Unix(0, b.sys.lastStep.Load())
	r.Note = fmt.Sprintf("to first step %s, steps %s, after last step %s", first.Sub(begin).Round(time.Millisecond),
		last.Sub(first).Round(time.Millisecond), begin.Add(d).Sub(last).Round(time.Millisecond))
	if mc > 0 {
		r.Note = "MaxConcurrency " + strconv.Itoa(mc) + "; " + r.Note
	}
	b.report(r)
	return nil
}

// withKill runs W5: W1 with N = n while one of the workers is killed at half way and restarted.
func (b *runner) withKill(ctx context.Context, n int) error {
	if len(b.sys.workers) < 2 {
		return fmt.Errorf("W5 needs two workers")
	}
	bar := b.bar(n, fmt.Sprintf("W5 N=%d", n))
	b.sys.steps.Store(0)
	b.sys.runsMu.Lock()
	b.sys.runs = map[int]int{}
	b.sys.runsMu.Unlock()
	stop := b.follow(bar, &b.sys.steps)
	killed := make(chan error, 1)
	go func() {
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for range t.C {
			if b.sys.steps.Load() >= int64(n/2) || ctx.Err() != nil {
				break
			}
		}
		b.sys.killWorker(1)
		killed <- b.sys.addWorker(ctx, 1)
	}()
	d, err := b.sys.run(ctx, "bench-w5", parallelInput{N: n})
	stop()
	b.finish(bar)
	if kerr := <-killed; err == nil {
		err = kerr
	}
	if err != nil {
		return err
	}
	twice := 0
	b.sys.runsMu.Lock()
	for _, c := range b.sys.runs {
		if c > 1 {
			twice++
		}
	}
	b.sys.runsMu.Unlock()
	b.report(Result{Workload: "W5", N: n, Durability: b.durability, WallMS: ms(d), BranchesPerSec: float64(n) / d.Seconds(),
		StepsRerun: twice, Note: "worker 1 of 2 killed at half way, restarted"})
	return nil
}

// latency runs W3: the three-branch example, one execution after another.
func (b *runner) latency(ctx context.Context, n int) error {
	bar := b.bar(n, "W3")
	var lat []time.Duration
	cpu := cpuTime()
	start := time.Now()
	for i := range n {
		d, err := b.sys.run(ctx, "bench-check", "")
		if err != nil {
			return err
		}
		lat = append(lat, d)
		_ = bar.Set(i + 1)
	}
	wall := time.Since(start)
	cpu = cpuTime() - cpu
	b.finish(bar)
	slices.Sort(lat)
	b.report(Result{Workload: "W3", N: n, Durability: b.durability, WallMS: ms(wall), ExecsPerSec: float64(n) / wall.Seconds(),
		P50MS: ms(lat[len(lat)/2]), P99MS: ms(lat[min(len(lat)-1, len(lat)*99/100)]), MaxMS: ms(lat[len(lat)-1]),
		CPUPerUnitUS: perUnit(cpu, n)})
	return nil
}

// concurrent runs W4: n executions at once, each a Parallel of width branches.
func (b *runner) concurrent(ctx context.Context, n, width int) error {
	bar := b.bar(n*width, "W4")
	b.sys.steps.Store(0)
	stop := b.follow(bar, &b.sys.steps)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			if _, err := b.sys.run(ctx, "bench-parallel", parallelInput{N: width}); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	wall := time.Since(start)
	stop()
	b.finish(bar)
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	b.report(Result{Workload: "W4", N: n * width, Durability: b.durability, WallMS: ms(wall),
		ExecsPerSec: float64(n) / wall.Seconds(), BranchesPerSec: float64(n*width) / wall.Seconds(),
		Note: fmt.Sprintf("%d executions x %d branches", n, width)})
	return nil
}

func (b *runner) bar(n int, title string) *progressbar.ProgressBar {
	if b.o.Progress == nil {
		return progressbar.DefaultSilent(int64(n), title)
	}
	return progressbar.NewOptions(n, progressbar.OptionSetWriter(b.o.Progress), progressbar.OptionSetDescription(title),
		progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("br"),
		progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionClearOnFinish())
}

func (b *runner) finish(bar *progressbar.ProgressBar) { _ = bar.Finish() }

// follow updates bar from counter until the returned stop is called.
func (b *runner) follow(bar *progressbar.ProgressBar, counter *atomic.Int64) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = bar.Set64(counter.Load())
			}
		}
	})
	return func() { close(done); wg.Wait(); _ = bar.Set64(counter.Load()) }
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// cpuTime is the CPU time this process has used so far, user and system (0 where unknown).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func perUnit(cpu time.Duration, n int) float64 {
	if cpu <= 0 || n == 0 {
		return 0
	}
	return float64(cpu.Microseconds()) / float64(n)
}

// resetPeakRSS resets the kernel's high-water mark of this process's resident set (Linux).
func resetPeakRSS() {
	runtime.GC()
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
}

// peakRSSMiB is this process's peak resident set since the last reset (Linux; 0 elsewhere).
func peakRSSMiB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 64)
			return kb / 1024
		}
	}
	return 0
}
