package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/jetflow/jetflow/internal/bench"
	"github.com/jetflow/jetflow/internal/service"
)

func benchCmd() *cobra.Command {
	var (
		workloads, jsonFile, sync, level, cpuProfile, memProfile string
		full, inProcess                                          bool
		workers, w3Executions                                    int
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure jetflow with the workloads of BENCH.md (W1–W5 and RAW)",
		Long: "bench runs the workloads against an embedded NATS server with file storage (or --nats URL),\n" +
			"with a coordinator and workers in this process, and prints a table. RAW — the bare JetStream\n" +
			"pipeline a branch needs — runs in the same invocation, so every figure is also a ratio to\n" +
			"this machine's ceiling. W1-sync repeats W1 N=10,000 with an fsync on every write.",
		Example: "  jetflow bench --workloads RAW,W1 --json bench.json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := service.SignalContext(cmd.Context())
			defer stop()
			url, _ := cmd.Flags().GetString("nats")
			if w3Executions < 1 {
				return &exitError{exitUsage, fmt.Errorf("--w3-executions must be at least 1, got %d", w3Executions)}
			}
			o := bench.Options{NatsURL: url, Full: full, Workers: workers, Progress: cmd.ErrOrStderr(),
				Logger: service.Logger(level), InProcess: inProcess, W3Executions: w3Executions}
			switch sync {
			case "default":
			case "always":
				o.SyncAlways = true
			default:
				return &exitError{exitUsage, fmt.Errorf("--sync must be default or always, got %q", sync)}
			}
			if workloads != "" {
				o.Workloads = strings.Split(workloads, ",")
			}
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return err
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
				defer pprof.StopCPUProfile()
			}
			if memProfile != "" {
				defer func() {
					if werr := writeHeapProfile(memProfile); werr != nil {
						fmt.Fprintln(cmd.ErrOrStderr(), "jetflow bench:", werr)
					}
				}()
			}
			var results []bench.Result
			err := bench.Run(ctx, o, func(r bench.Result) {
				results = append(results, r)
				fmt.Fprintf(cmd.ErrOrStderr(), "%s N=%d done in %.0f ms\n", r.Workload, r.N, r.WallMS)
			})
			printTable(cmd.OutOrStdout(), results)
			if jsonFile != "" && len(results) > 0 {
				if werr := writeJSON(jsonFile, results); werr != nil && err == nil {
					err = werr
				}
			}
			return err
		},
	}
	cmd.Flags().StringVar(&workloads, "workloads", "", "comma-separated subset of "+strings.Join(bench.All, ","))
	cmd.Flags().BoolVar(&full, "full", false, "also run W1 with N = 100,000")
	cmd.Flags().BoolVar(&inProcess, "in-process", false, "connect to the embedded server in memory, not over loopback TCP (a one-process deployment; RAW too)")
	cmd.Flags().StringVar(&jsonFile, "json", "", "also write one JSON object per workload to this file")
	cmd.Flags().StringVar(&sync, "sync", "default", "embedded server durability: default (periodic flush) or always (fsync every write)")
	cmd.Flags().IntVar(&workers, "workers", 2, "workers in this process")
	cmd.Flags().IntVar(&w3Executions, "w3-executions", 200, "executions W3 runs one after another (more give a CPU profile of W3 enough samples)")
	cmd.Flags().StringVar(&level, "log-level", "error", "log level of the services")
	cmd.Flags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run (server included) to this file")
	cmd.Flags().StringVar(&memProfile, "memprofile", "", "write a heap profile at the end of the run (its alloc_space and alloc_objects cover the whole run) to this file")
	return cmd
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

func printTable(w io.Writer, rs []bench.Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\tN\twall ms\tbranches/s\ttasks/s\texec/s\tp50 ms\tp99 ms\tmax ms\tpeak RSS MiB\tCPU µs each\tmax in flight\tsteps run twice\tdurability\tnote\t")
	f := func(v float64, prec int) string {
		if v == 0 {
			return "-"
		}
		return fmt.Sprintf("%.*f", prec, v)
	}
	for _, r := range rs {
		mif := "-"
		if r.MaxInFlight > 0 {
			mif = fmt.Sprint(r.MaxInFlight)
		}
		twice := "-"
		if r.Workload == "W5" {
			twice = fmt.Sprint(r.StepsRerun)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.Workload, r.N, f(r.WallMS, 1),
			f(r.BranchesPerSec, 0), f(r.TasksPerSec, 0), f(r.ExecsPerSec, 1), f(r.P50MS, 2), f(r.P99MS, 2), f(r.MaxMS, 2),
			f(r.PeakRSSMiB, 0), f(r.CPUPerUnitUS, 0), mif, twice, r.Durability, r.Note)
	}
	_ = tw.Flush()
}

func writeJSON(path string, rs []bench.Result) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(f)
	for _, r := range rs {
		if err := enc.Encode(r); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}
