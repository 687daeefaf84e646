package bench

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// raw measures the machine's ceiling: the bare JetStream pipeline one branch needs — publish a
// task, consume and ack it, publish a result event, consume it, write a KV entry — for n tasks,
// pipelined, with the same durability as the system under test.
func raw(ctx context.Context, url string, opts []nats.Option, n int, progress func(done int64)) (time.Duration, error) {
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return 0, err
	}
	suffix := strconv.FormatInt(time.Now().UnixNano(), 36)
	tasks, events, bucket := "BENCH_RAW_TASKS_"+suffix, "BENCH_RAW_EVENTS_"+suffix, "bench-raw-"+suffix
	taskSubj, eventSubj := "bench.raw."+suffix+".task", "bench.raw."+suffix+".event"
	for name, subj := range map[string]string{tasks: taskSubj, events: eventSubj} {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subj}, Retention: jetstream.WorkQueuePolicy}); err != nil {
			return 0, fmt.Errorf("bench: raw stream: %w", err)
		}
		defer func() { _ = js.DeleteStream(context.Background(), name) }()
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, History: 1})
	if err != nil {
		return 0, fmt.Errorf("bench: raw bucket: %w", err)
	}
	defer func() { _ = js.DeleteKeyValue(context.Background(), bucket) }()
	_ = kv
	mk := func(stream string) (jetstream.Consumer, error) {
		return js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{Durable: "raw", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 8192})
	}
	taskCons, err := mk(tasks)
	if err != nil {
		return 0, err
	}
	eventCons, err := mk(events)
	if err != nil {
		return 0, err
	}
	var written atomic.Int64
	done := make(chan struct{})
	failed := make(chan error, 1)
	// Each consumer publishes what follows asynchronously and acks a message once its publish is
	// acknowledged, in order, from one goroutine.
	type pending struct {
		f   jetstream.PubAckFuture
		msg jetstream.Msg
	}
	pipe := func(cons jetstream.Consumer, next func(jetstream.Msg) (jetstream.PubAckFuture, error), last bool) (jetstream.ConsumeContext, chan pending, error) {
		q := make(chan pending, 8192)
		cc, err := cons.Consume(func(msg jetstream.Msg) {
			f, err := next(msg)
			if err != nil {
				return
			}
			q <- pending{f, msg}
		}, jetstream.PullMaxMessages(1000))
		if err != nil {
			return nil, nil, err
		}
		go func() {
			for p := range q {
				select {
				case <-p.f.Ok():
					_ = p.msg.Ack()
					if last && written.Add(1) == int64(n) {
						close(done)
					}
				case err := <-p.f.Err():
					select {
					case failed <- err:
					default:
					}
				}
			}
		}()
		return cc, q, nil
	}
	cc1, q1, err := pipe(taskCons, func(m jetstream.Msg) (jetstream.PubAckFuture, error) {
		return js.PublishAsync(eventSubj, m.Data(), jetstream.WithStallWait(10*time.Second))
	}, false)
	if err != nil {
		return 0, err
	}
	defer func() { cc1.Stop(); close(q1) }()
	cc2, q2, err := pipe(eventCons, func(m jetstream.Msg) (jetstream.PubAckFuture, error) {
		md, _ := m.Metadata()
		return js.PublishAsync("$KV."+bucket+".k"+strconv.FormatUint(md.Sequence.Stream, 10), m.Data(), jetstream.WithStallWait(10*time.Second))
	}, true)
	if err != nil {
		return 0, err
	}
	defer func() { cc2.Stop(); close(q2) }()

	body := []byte(`{"id":"0123456789abcdefghij","fn":"bench","path":[["1",12345]]}`)
	start := time.Now()
	for range n {
		if _, err := js.PublishAsync(taskSubj, body, jetstream.WithStallWait(10*time.Second)); err != nil {
			return 0, err
		}
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			progress(int64(n))
			return time.Since(start), nil
		case <-tick.C:
			progress(written.Load())
		case err := <-failed:
			return 0, fmt.Errorf("bench: raw pipeline publish: %w", err)
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}
