package jspull_test

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/jetflow/jetflow/durabletest"
	"github.com/jetflow/jetflow/internal/embedded"
	"github.com/jetflow/jetflow/internal/jspull"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, durabletest.KnownLeaks()...) }

// setUp makes a work-queue stream W with a durable consumer C and returns a JetStream handle.
func setUp(t *testing.T, nc *nats.Conn, ackWait time.Duration) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, err = js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "W", Subjects: []string{"w.>"}, Retention: jetstream.WorkQueuePolicy})
	require.NoError(t, err)
	_, err = js.CreateOrUpdateConsumer(t.Context(), "W", jetstream.ConsumerConfig{Durable: "C", AckPolicy: jetstream.AckExplicitPolicy, AckWait: ackWait})
	require.NoError(t, err)
	return js
}

// received collects what Run hands on, by payload.
type received struct {
	mu   sync.Mutex
	seen map[string]int
	mds  []*jetstream.MsgMetadata
	ch   chan string
}

func newReceived() *received { return &received{seen: map[string]int{}, ch: make(chan string, 1024)} }

func (r *received) each(ack func(jetstream.Msg) error) func(jetstream.Msg) {
	return func(m jetstream.Msg) {
		md, err := m.Metadata()
		r.mu.Lock()
		r.seen[string(m.Data())]++
		if err == nil {
			r.mds = append(r.mds, md)
		}
		r.mu.Unlock()
		_ = ack(m)
		r.ch <- string(m.Data())
	}
}

// await waits for n messages, each within the bound.
func (r *received) await(t *testing.T, n int, within time.Duration) []string {
	t.Helper()
	var got []string
	for range n {
		select {
		case d := <-r.ch:
			got = append(got, d)
		case <-time.After(within):
			t.Fatalf("got %d of %d messages: %v", len(got), n, got)
		}
	}
	return got
}

// watchRequests returns a channel that receives a value for every pull request made to consumer
// C of W, seen from another subscriber.
func watchRequests(t *testing.T, nc *nats.Conn) <-chan struct{} {
	t.Helper()
	requests := make(chan struct{}, 1024)
	watch, err := nc.Subscribe("$JS.API.CONSUMER.MSG.NEXT.W.C", func(*nats.Msg) { requests <- struct{}{} })
	require.NoError(t, err)
	t.Cleanup(func() { _ = watch.Unsubscribe() })
	require.NoError(t, nc.Flush())
	return requests
}

func run(t *testing.T, p *jspull.Puller, each func(jetstream.Msg)) context.CancelFunc {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Run(ctx, each)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return cancel
}

// Messages come in order and are acked through the reply subject; the puller keeps pulling over
// many expired requests, so a message published after a quiet spell comes at once, and a batch
// larger than one request comes whole.
func TestPullsAcrossRequestsAndAcks(t *testing.T) {
	nc := durabletest.NATS(t)
	js := setUp(t, nc, 30*time.Second)
	requests := watchRequests(t, nc)
	r := newReceived()
	run(t, jspull.New(nc, slog.Default(), "W", "C", 4, time.Second), r.each(jetstream.Msg.Ack))

	for i := range 10 { // more than two requests' worth
		_, err := js.Publish(t.Context(), "w.a", []byte(strconv.Itoa(i)))
		require.NoError(t, err)
	}
	require.Equal(t, []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}, r.await(t, 10, 5*time.Second))

	// Two requests expire with nothing to send, and are made again; the next message still
	// comes within a moment.
	for len(requests) > 0 {
		<-requests
	}
	for range 2 {
		select {
		case <-requests:
		case <-time.After(10 * time.Second):
			t.Fatal("no new pull request after one expired")
		}
	}
	_, err := js.Publish(t.Context(), "w.b", []byte("late"))
	require.NoError(t, err)
	require.Equal(t, []string{"late"}, r.await(t, 1, time.Second))

	st, err := js.Stream(t.Context(), "W")
	require.NoError(t, err)
	info, err := st.Info(t.Context())
	require.NoError(t, err)
	require.Zero(t, info.State.Msgs, "every message was acked (and removed from the work queue)")
	r.mu.Lock()
	defer r.mu.Unlock()
	require.Equal(t, "W", r.mds[0].Stream)
	require.Equal(t, "C", r.mds[0].Consumer)
	require.EqualValues(t, 1, r.mds[0].NumDelivered)
	require.EqualValues(t, 1, r.mds[0].Sequence.Stream)
	require.EqualValues(t, 11, r.mds[10].Sequence.Stream)
}

// A nak with a delay brings the message back, delivered a second time; a term does not.
func TestNakWithDelayAndTerm(t *testing.T) {
	nc := durabletest.NATS(t)
	js := setUp(t, nc, 30*time.Second)
	r := newReceived()
	run(t, jspull.New(nc, slog.Default(), "W", "C", 8, time.Second), r.each(func(m jetstream.Msg) error {
		md, err := m.Metadata()
		if err != nil {
			return err
		}
		switch {
		case string(m.Data()) == "drop":
			return m.Term()
		case md.NumDelivered == 1:
			return m.NakWithDelay(100 * time.Millisecond)
		}
		return m.Ack()
	}))
	_, err := js.Publish(t.Context(), "w.a", []byte("again"))
	require.NoError(t, err)
	_, err = js.Publish(t.Context(), "w.a", []byte("drop"))
	require.NoError(t, err)
	got := r.await(t, 3, 5*time.Second)
	require.ElementsMatch(t, []string{"again", "drop", "again"}, got)
	r.mu.Lock()
	require.Equal(t, map[string]int{"again": 2, "drop": 1}, r.seen)
	last := r.mds[len(r.mds)-1]
	r.mu.Unlock()
	require.EqualValues(t, 2, last.NumDelivered, "the nak'ed message came back")
	select {
	case d := <-r.ch:
		t.Fatalf("%q came back after a term or an ack", d)
	case <-time.After(300 * time.Millisecond): // three times the nak's delay: nothing more comes
	}
}

// A server restart loses the waiting pull request; the puller makes another once the old one's
// end is overdue, and what is published after the restart comes.
func TestPullsAgainAfterAServerRestart(t *testing.T) {
	srv, err := embedded.Start(embedded.Options{StoreDir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js := setUp(t, nc, 30*time.Second)
	r := newReceived()
	run(t, jspull.New(nc, slog.Default(), "W", "C", 8, time.Second), r.each(jetstream.Msg.Ack))
	_, err = js.Publish(t.Context(), "w.a", []byte("before"))
	require.NoError(t, err)
	require.Equal(t, []string{"before"}, r.await(t, 1, 5*time.Second))

	require.NoError(t, srv.Restart())
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	for {
		_, err = js.Publish(ctx, "w.a", []byte("after")) // fails until the client has reconnected
		if err == nil || ctx.Err() != nil {
			break
		}
	}
	require.NoError(t, err)
	require.Equal(t, []string{"after"}, r.await(t, 1, 10*time.Second))
}

// The next batch is asked for once half of the last has come, not when it has all been handed on:
// with requests that do not expire during the test, two messages of a batch of four bring a
// second request.
func TestAsksForTheNextBatchAtHalf(t *testing.T) {
	nc := durabletest.NATS(t)
	js := setUp(t, nc, 30*time.Second)
	requests := watchRequests(t, nc)
	r := newReceived()
	run(t, jspull.New(nc, slog.Default(), "W", "C", 4, time.Minute), r.each(jetstream.Msg.Ack))
	await := func(what string) {
		t.Helper()
		select {
		case <-requests:
		case <-time.After(5 * time.Second):
			t.Fatal(what)
		}
	}
	await("no first request")
	for _, d := range []string{"a", "b"} {
		_, err := js.Publish(t.Context(), "w.a", []byte(d))
		require.NoError(t, err)
	}
	require.Equal(t, []string{"a", "b"}, r.await(t, 2, 5*time.Second))
	await("no second request after half the batch came")
}
