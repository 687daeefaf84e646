package durabletest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetflow/jetflow/client"
	"github.com/jetflow/jetflow/coordinator"
	"github.com/jetflow/jetflow/durable"
	"github.com/jetflow/jetflow/internal/embedded"
	"github.com/jetflow/jetflow/worker"
)

// Option configures New.
type Option func(*options)

type options struct {
	workers, coordinators int
	ackWait, leaseTTL     time.Duration
	timeout               time.Duration
	maxConcurrent         int
	clusterNodes          int
	logger                *slog.Logger
	tp                    trace.TracerProvider
	mp                    metric.MeterProvider
}

// WithWorkers sets how many workers run (default 2).
func WithWorkers(n int) Option { return func(o *options) { o.workers = n } }

// WithCoordinators sets how many coordinators run (default 1).
func WithCoordinators(n int) Option { return func(o *options) { o.coordinators = n } }

// WithAckWait sets how long a task or event held by a dead process waits before redelivery
// (default 1s, so that crash tests recover quickly).
func WithAckWait(d time.Duration) Option { return func(o *options) { o.ackWait = d } }

// WithLeaseTTL sets how long a dead coordinator's partitions wait before another takes them
// (default 2s).
func WithLeaseTTL(d time.Duration) Option { return func(o *options) { o.leaseTTL = d } }

// WithTimeout bounds how long Run waits for a result (default 60s).
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithCluster runs a cluster of n embedded NATS servers (n >= 3) instead of one, with every
// stream and bucket replicated 3 times: the production topology, for fault tests.
func WithCluster(n int) Option { return func(o *options) { o.clusterNodes = n } }

// WithMaxConcurrent sets each worker's MaxConcurrent.
func WithMaxConcurrent(n int) Option { return func(o *options) { o.maxConcurrent = n } }

// WithLogger sends the services' logs to l (default: discarded).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithTracerProvider sends the spans of the client, the coordinators and the workers to tp (an
// in-memory exporter's provider, say), so that a test can check an execution's trace.
func WithTracerProvider(tp trace.TracerProvider) Option { return func(o *options) { o.tp = tp } }

// WithMeterProvider sends the coordinators' and workers' metrics to mp.
func WithMeterProvider(mp metric.MeterProvider) Option { return func(o *options) { o.mp = mp } }

// Env is a running test environment.
type Env struct {
	t        testing.TB
	opts     options
	dir      string
	srv      *embedded.Server
	cluster  *embedded.Cluster
	replicas int
	nc       *nats.Conn
	cl       *client.Client

	mu      sync.Mutex
	regs    []func(*worker.Worker)
	workers []*workerSlot
	coords  []*coordSlot
}

type workerSlot struct {
	w  *worker.Worker
	nc *nats.Conn
}

type coordSlot struct {
	c  *coordinator.Coordinator
	nc *nats.Conn
}

// New starts an embedded JetStream, the coordinators and the workers, and registers their
// shutdown on t.Cleanup.
func New(t testing.TB, opts ...Option) *Env {
	t.Helper()
	o := options{workers: 2, coordinators: 1, ackWait: time.Second, leaseTTL: 2 * time.Second, timeout: 60 * time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger == nil {
		o.logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	e := &Env{t: t, opts: o, dir: t.TempDir()}
	var err error
	if o.clusterNodes > 0 {
		if e.cluster, err = embedded.StartCluster(e.dir, o.clusterNodes); err != nil {
			t.Fatalf("durabletest: %v", err)
		}
		e.replicas = 3
	} else if e.srv, err = embedded.Start(embedded.Options{StoreDir: e.dir}); err != nil {
		t.Fatalf("durabletest: %v", err)
	}
	t.Cleanup(e.close)
	for range o.coordinators {
		e.coords = append(e.coords, &coordSlot{})
		e.StartCoordinator(len(e.coords) - 1)
	}
	e.nc = e.connect("client")
	if e.cl, err = client.New(e.nc, client.WithTracerProvider(e.opts.tp)); err != nil {
		t.Fatalf("durabletest: %v", err)
	}
	for range o.workers {
		e.AddWorker()
	}
	return e
}

func (e *Env) connect(name string) *nats.Conn {
	e.t.Helper()
	nc, err := nats.Connect(e.URL(), nats.Name(name), nats.MaxReconnects(-1),
		nats.ReconnectWait(50*time.Millisecond), nats.RetryOnFailedConnect(true))
	if err != nil {
		e.t.Fatalf("durabletest: connect: %v", err)
	}
	return nc
}

// Register registers h under function on every worker, those running now and those started
// later. It may be called after New.
func Register[I, O any](env *Env, function string, h func(durable.Context, I) (O, error)) {
	reg := func(w *worker.Worker) { worker.Register(w, function, h) }
	env.mu.Lock()
	defer env.mu.Unlock()
	env.regs = append(env.regs, reg)
	for _, s := range env.workers {
		if s.w != nil {
			reg(s.w)
		}
	}
}

// Run starts an execution of function and waits for its result. A failed execution returns
// *client.ExecutionError.
func Run[O any](env *Env, function string, input any) (O, error) {
	var out O
	ctx, cancel := context.WithTimeout(context.Background(), env.opts.timeout)
	defer cancel()
	id, err := env.cl.Start(ctx, function, input)
	if err != nil {
		return out, err
	}
	err = env.cl.Result(ctx, id, &out)
	return out, err
}

// Client is a client connected to the environment.
func (e *Env) Client() *client.Client { return e.cl }

// Conn is the client's NATS connection.
func (e *Env) Conn() *nats.Conn { return e.nc }

// URL is the embedded server's nats:// URL (with a cluster: every node's, comma-separated).
func (e *Env) URL() string {
	if e.cluster != nil {
		return e.cluster.URL()
	}
	return e.srv.URL()
}

// Cluster is the embedded cluster (nil unless WithCluster).
func (e *Env) Cluster() *embedded.Cluster { return e.cluster }

// Timeout is the bound Run puts on a wait for a result.
func (e *Env) Timeout() time.Duration { return e.opts.timeout }

// AddWorker starts one more worker with every registered handler and returns its index.
func (e *Env) AddWorker() int {
	e.mu.Lock()
	e.workers = append(e.workers, &workerSlot{})
	i := len(e.workers) - 1
	e.mu.Unlock()
	e.StartWorker(i)
	return i
}

// StartWorker starts a new worker in slot i (after KillWorker or StopWorker).
func (e *Env) StartWorker(i int) {
	e.t.Helper()
	nc := e.connect(fmt.Sprintf("worker-%d", i))
	w, err := worker.New(nc, &worker.Config{AckWait: e.opts.ackWait, Logger: e.opts.logger.With("worker", i),
		MaxConcurrent: e.opts.maxConcurrent, Replicas: e.replicas, TracerProvider: e.opts.tp, MeterProvider: e.opts.mp})
	if err != nil {
		e.t.Fatalf("durabletest: %v", err)
	}
	e.mu.Lock()
	for _, reg := range e.regs {
		reg(w)
	}
	e.workers[i] = &workerSlot{w: w, nc: nc}
	e.mu.Unlock()
	if err := w.Start(context.Background()); err != nil {
		e.t.Fatalf("durabletest: start worker %d: %v", i, err)
	}
}

// KillWorker stops worker i as a crash would: its connection closes first, so nothing it holds is
// acknowledged or recorded; its tasks go to other workers after the ack wait.
func (e *Env) KillWorker(i int) {
	if s := e.takeWorker(i); s.w != nil {
		halt(s.w, s.nc, true, 0)
	}
}

// StopWorker stops worker i gracefully: it finishes what it holds.
func (e *Env) StopWorker(i int) {
	if s := e.takeWorker(i); s.w != nil {
		halt(s.w, s.nc, false, 30*time.Second)
	}
}

func (e *Env) takeWorker(i int) *workerSlot {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.workers[i]
	e.workers[i] = &workerSlot{}
	return s
}

// halt stops a service as a crash would (its connection closes first, so it can neither ack nor
// write, and it waits for nothing) or gracefully (it finishes what it holds within grace, then its
// connection closes).
func halt(svc interface{ Stop(context.Context) error }, nc *nats.Conn, crash bool, grace time.Duration) {
	if crash {
		nc.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	_ = svc.Stop(ctx)
	nc.Close()
}

// StartCoordinator starts a new coordinator in slot i.
func (e *Env) StartCoordinator(i int) {
	e.t.Helper()
	nc := e.connect(fmt.Sprintf("coordinator-%d", i))
	c, err := coordinator.New(nc, &coordinator.Config{AckWait: e.opts.ackWait, Logger: e.opts.logger.With("coordinator", i),
		LeaseTTL: e.opts.leaseTTL, Replicas: e.replicas, TracerProvider: e.opts.tp, MeterProvider: e.opts.mp})
	if err != nil {
		e.t.Fatalf("durabletest: %v", err)
	}
	if err := c.Start(context.Background()); err != nil {
		e.t.Fatalf("durabletest: start coordinator %d: %v", i, err)
	}
	e.mu.Lock()
	e.coords[i] = &coordSlot{c: c, nc: nc}
	e.mu.Unlock()
}

// Coordinator returns coordinator i (nil while it is stopped).
func (e *Env) Coordinator(i int) *coordinator.Coordinator {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.coords[i].c
}

// StopCoordinator stops coordinator i gracefully: it finishes the event in hand and releases its
// partitions for the others to take.
func (e *Env) StopCoordinator(i int) {
	if s := e.takeCoordinator(i); s.c != nil {
		halt(s.c, s.nc, false, 10*time.Second)
	}
}

// KillCoordinator stops coordinator i as a crash would: its connection closes first, so its
// leases are not released and expire after the lease TTL.
func (e *Env) KillCoordinator(i int) {
	if s := e.takeCoordinator(i); s.c != nil {
		halt(s.c, s.nc, true, 10*time.Second)
	}
}

func (e *Env) takeCoordinator(i int) *coordSlot {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.coords[i]
	e.coords[i] = &coordSlot{}
	return s
}

// RestartServer stops the embedded NATS server and starts it again on the same port and store,
// as a crash and restart would. Every connection reconnects by itself. (Single server only.)
func (e *Env) RestartServer() {
	e.t.Helper()
	if e.srv == nil {
		e.t.Fatal("durabletest: RestartServer needs a single server; use Cluster().StopNode with WithCluster")
	}
	if err := e.srv.Restart(); err != nil {
		e.t.Fatalf("durabletest: restart server: %v", err)
	}
}

func (e *Env) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e.mu.Lock()
	workers, coords := e.workers, e.coords
	e.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range workers {
		if s.w != nil {
			wg.Go(func() { _ = s.w.Stop(ctx); s.nc.Close() })
		}
	}
	for _, s := range coords {
		if s.c != nil {
			wg.Go(func() { _ = s.c.Stop(ctx); s.nc.Close() })
		}
	}
	wg.Wait()
	if e.nc != nil {
		e.nc.Close()
	}
	if e.cluster != nil {
		e.cluster.Shutdown()
	} else {
		e.srv.Shutdown()
	}
}

// NATS starts a fresh embedded JetStream (file storage in a temporary directory) and returns a
// connection to it; both are closed when the test ends. For tests of code that talks to
// JetStream itself, with no coordinator or worker.
func NATS(t testing.TB) *nats.Conn {
	t.Helper()
	srv, err := embedded.Start(embedded.Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatalf("durabletest: start NATS: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatalf("durabletest: connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}
