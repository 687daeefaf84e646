package bench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetflow/jetflow/client"
	"github.com/jetflow/jetflow/coordinator"
	"github.com/jetflow/jetflow/durable"
	"github.com/jetflow/jetflow/internal/embedded"
	"github.com/jetflow/jetflow/worker"
)

// system is a jetflow deployment in this process: a server (embedded, unless a URL is given), a
// coordinator, workers and a client, with the bench's handlers registered.
type system struct {
	srv     *embedded.Server
	dir     string
	conns   []*nats.Conn
	coord   *coordinator.Coordinator
	workers []*worker.Worker
	cl      *client.Client
	url     string

	steps     atomic.Int64 // step bodies run, for progress
	firstStep atomic.Int64 // when the first and the last step body ran (unix ns), for phases
	lastStep  atomic.Int64
	gauge     gauge // step bodies running at once

	opts   Options
	log    *slog.Logger
	wconns []*nats.Conn // each worker's connection, to kill it (W5)
	runsMu sync.Mutex
	runs   map[int]int // W5: step bodies run, by branch
}

// payload is the 20-byte result of every branch's step (BENCH.md).
const payload = "0123456789abcdefghij"

// parallelInput is the input of the bench's Parallel handler.
type parallelInput struct {
	N              int `msgpack:"n"`
	MaxConcurrency int `msgpack:"mc"`
}

func startSystem(ctx context.Context, o Options) (*system, error) {
	s := &system{url: o.NatsURL, opts: o, runs: map[int]int{}}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s.log = log
	if s.url == "" {
		dir, err := os.MkdirTemp("", "jetflow-bench-")
		if err != nil {
			return nil, err
		}
		s.dir = dir
		if s.srv, err = embedded.Start(embedded.Options{StoreDir: dir, SyncAlways: o.SyncAlways}); err != nil {
			s.stop()
			return nil, err
		}
		s.url = s.srv.URL()
	}
	connect := func(name string) (*nats.Conn, error) {
		nc, err := nats.Connect(s.url, s.connOptions(name)...)
		if err != nil {
			return nil, fmt.Errorf("bench: connect to %s: %w", s.url, err)
		}
		s.conns = append(s.conns, nc)
		return nc, nil
	}
	nc, err := connect("bench-coordinator")
	if err != nil {
		s.stop()
		return nil, err
	}
	if s.coord, err = coordinator.New(nc, &coordinator.Config{Logger: log}); err != nil {
		s.stop()
		return nil, err
	}
	if err := s.coord.Start(ctx); err != nil {
		s.stop()
		return nil, err
	}
	for i := range max(1, o.Workers) {
		if err := s.addWorker(ctx, i); err != nil {
			s.stop()
			return nil, err
		}
	}
	if nc, err = connect("bench-client"); err != nil {
		s.stop()
		return nil, err
	}
	if s.cl, err = client.New(nc); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// connOptions are the options of every connection the bench makes, named name.
func (s *system) connOptions(name string) []nats.Option {
	opts := []nats.Option{nats.Name(name), nats.MaxReconnects(-1)}
	if s.srv != nil && s.opts.InProcess {
		opts = append(opts, s.srv.InProcess())
	}
	return opts
}

// addWorker starts worker i (replacing a killed one) with the bench's handlers.
func (s *system) addWorker(ctx context.Context, i int) error {
	nc, err := nats.Connect(s.url, s.connOptions(fmt.Sprintf("bench-worker-%d", i))...)
	if err != nil {
		return fmt.Errorf("bench: connect to %s: %w", s.url, err)
	}
	s.conns = append(s.conns, nc)
	w, err := worker.New(nc, &worker.Config{Logger: s.log, AckWait: s.opts.AckWait})
	if err != nil {
		return err
	}
	worker.Register(w, "bench-parallel", s.parallel)
	worker.Register(w, "bench-check", s.check)
	worker.Register(w, "bench-w5", s.counted)
	if err := w.Start(ctx); err != nil {
		return err
	}
	for len(s.workers) <= i {
		s.workers = append(s.workers, nil)
		s.wconns = append(s.wconns, nil)
	}
	s.workers[i], s.wconns[i] = w, nc
	return nil
}

// killWorker stops worker i as a crash would: at once, what it runs is aborted (nothing is
// reported, no task is nacked) and it starts nothing more, then its connection closes. Closing
// the connection first would let its runners go on starting prefetched tasks whose outcomes
// could no longer be written, which a process that died would not do.
func (s *system) killWorker(i int) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = s.workers[i].Stop(ctx)
	s.wconns[i].Close()
	s.workers[i] = nil
}

// counted is W5's handler: W1's Parallel, counting step bodies by branch.
func (s *system) counted(ctx durable.Context, in parallelInput) (int, error) {
	branches := make([]durable.Branch[string], in.N)
	for i := range branches {
		branches[i] = durable.Branch[string]{Func: func(ctx durable.Context) (string, error) {
			return durable.Step(ctx, "work", func(durable.StepContext) (string, error) {
				s.runsMu.Lock()
				s.runs[i]++
				s.runsMu.Unlock()
				s.steps.Add(1)
				return payload, nil
			})
		}}
	}
	res, err := durable.Parallel(ctx, "fan-out", branches)
	if err != nil {
		return 0, err
	}
	return res.SuccessCount(), nil
}

func (s *system) step(ctx durable.Context, name string) (string, error) {
	return durable.Step(ctx, name, func(durable.StepContext) (string, error) {
		s.gauge.enter()
		defer s.gauge.leave()
		if s.steps.Add(1) == 1 {
			s.firstStep.Store(time.Now().UnixNano())
		}
		s.lastStep.Store(time.Now().UnixNano())
		return payload, nil
	})
}

// parallel is W1, W2 and W4's handler: a Parallel of N branches, each one step.
func (s *system) parallel(ctx durable.Context, in parallelInput) (int, error) {
	branches := make([]durable.Branch[string], in.N)
	for i := range branches {
		branches[i] = durable.Branch[string]{Func: func(ctx durable.Context) (string, error) { return s.step(ctx, "work") }}
	}
	var opts []durable.BatchOption
	if in.MaxConcurrency > 0 {
		opts = append(opts, durable.WithMaxConcurrency(in.MaxConcurrency))
	}
	res, err := durable.Parallel(ctx, "fan-out", branches, opts...)
	if err != nil {
		return 0, err
	}
	if res.SuccessCount() != in.N {
		return 0, fmt.Errorf("bench: %d of %d branches succeeded", res.SuccessCount(), in.N)
	}
	return res.SuccessCount(), nil
}

// check is W3's handler: the three-branch check-services example.
func (s *system) check(ctx durable.Context, _ string) (int, error) {
	branch := func(name string) durable.Branch[string] {
		return durable.Branch[string]{Func: func(ctx durable.Context) (string, error) { return s.step(ctx, name) }}
	}
	res, err := durable.Parallel(ctx, "check-services", []durable.Branch[string]{
		branch("check-inventory"), branch("check-payment"), branch("check-shipping")})
	if err != nil {
		return 0, err
	}
	return res.SuccessCount(), nil
}

func (s *system) run(ctx context.Context, function string, input any) (time.Duration, error) {
	start := time.Now()
	id, err := s.cl.Start(ctx, function, input)
	if err != nil {
		return 0, err
	}
	var n int
	if err := s.cl.Result(ctx, id, &n); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

func (s *system) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, w := range s.workers {
		if w != nil {
			_ = w.Stop(ctx)
		}
	}
	if s.coord != nil {
		_ = s.coord.Stop(ctx)
	}
	for _, nc := range s.conns {
		nc.Close()
	}
	if s.srv != nil {
		s.srv.Shutdown()
	}
	if s.dir != "" {
		_ = os.RemoveAll(s.dir)
	}
}

// gauge counts what runs at once and remembers the most.
type gauge struct {
	mu        sync.Mutex
	now, most int
}

func (g *gauge) enter() {
	g.mu.Lock()
	g.now++
	g.most = max(g.most, g.now)
	g.mu.Unlock()
}

func (g *gauge) leave() {
	g.mu.Lock()
	g.now--
	g.mu.Unlock()
}

func (g *gauge) reset() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	m := g.most
	g.most = g.now
	return m
}
