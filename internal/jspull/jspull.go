// Package jspull pulls messages from a JetStream consumer through one subscription that lives as
// long as the puller runs, so that no message the server delivers is dropped by the client.
//
// The jetstream package's Fetch unsubscribes when its deadline passes, and its continuous pull
// starts over when heartbeats are late. Either way, a message the server has already sent
// (and counts as delivered) can arrive after the client stopped listening. It is then redelivered
// only after the consumer's AckWait. On a busy server, a pull request that reaches it late makes
// exactly that happen; the coordinator saw 30-second stalls under fsync-always. Here every pull
// request has its own reply subject under one wildcard subscription with no pending limit:
// whatever arrives is handed on, whichever request it answers.
package jspull

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Puller pulls from one durable consumer.
type Puller struct {
	nc      *nats.Conn
	log     *slog.Logger
	next    string // the consumer's next-message API subject
	body    []byte // a pull request: the batch and how long the server holds it
	batch   int
	expires time.Duration
}

// New returns a puller of consumer on stream that asks for batch messages at a time, each request
// held by the server for at most expires. It logs failed subscriptions to log at debug level.
func New(nc *nats.Conn, log *slog.Logger, stream, consumer string, batch int, expires time.Duration) *Puller {
	body := []byte(`{"batch":` + strconv.Itoa(batch) + `,"expires":` + strconv.FormatInt(expires.Nanoseconds(), 10) + `}`)
	return &Puller{nc: nc, log: log, next: "$JS.API.CONSUMER.MSG.NEXT." + stream + "." + consumer, body: body,
		batch: batch, expires: expires}
}

// lostAfter is how long past its expiry a request whose end was never seen is taken for lost (a
// server restarted, a consumer's leader moved) and made again.
const lostAfter = time.Second

// Run pulls until ctx ends and calls each with every message, in the order they arrive. each must
// ack, nak or term the message (or leave it to AckWait). A subscription that fails (its connection
// closed) is made again after a short wait.
func (p *Puller) Run(ctx context.Context, each func(jetstream.Msg)) {
	backoff := 10 * time.Millisecond
	for ctx.Err() == nil {
		if err := p.run(ctx, each); err != nil && ctx.Err() == nil {
			p.log.Debug("pull failed; retrying", "subject", p.next, "error", err)
			if !pause(ctx, backoff) {
				return
			}
			backoff = min(2*backoff, time.Second)
		}
	}
}

// run pulls through one subscription until ctx ends (nil) or the subscription fails.
func (p *Puller) run(ctx context.Context, each func(jetstream.Msg)) error {
	inbox := p.nc.NewInbox()
	sub, err := p.nc.SubscribeSync(inbox + ".*")
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()
	// Never drop: what the server sent is held here until it is handed on.
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return err
	}
	// Ending ctx ends the subscription, and with it the wait for the next message.
	defer context.AfterFunc(ctx, func() { _ = sub.Unsubscribe() })()
	var (
		n        uint64 // requests made: the last token of each one's reply subject
		pending  int    // messages asked for that have neither come nor been reported undelivered
		deadline time.Time
		backoff  = 10 * time.Millisecond
	)
	// request asks for another batch. A new one goes out when half of what was asked for has
	// come (or was reported undelivered), so that the next batch is on its way before the last
	// is handed on.
	request := func() {
		n++
		pending += p.batch
		deadline = time.Now().Add(p.expires + lostAfter)
		if err := p.nc.PublishRequest(p.next, inbox+"."+strconv.FormatUint(n, 36), p.body); err != nil {
			pending = 0
			deadline = time.Now().Add(backoff) // the connection is down: try again shortly
			backoff = min(2*backoff, time.Second)
		}
	}
	request()
	for {
		m, err := sub.NextMsg(time.Until(deadline)) // no timer when a message is waiting
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, nats.ErrTimeout):
			pending = 0 // the newest request's end is overdue: every request is taken for lost
			request()
			continue
		case err != nil:
			return err
		}
		if status := m.Header.Get("Status"); status != "" && len(m.Data) == 0 {
			// The end of a request: 408, it expired; 409, the server ended it (a leader moved,
			// too many waiting, the consumer deleted); 404 or 400, it was refused. The server
			// says how many of its messages it did not send.
			switch status {
			case "408":
				backoff = 10 * time.Millisecond
			case "404", "409", "400":
				if !pause(ctx, backoff) {
					return nil
				}
				backoff = min(2*backoff, time.Second)
			default:
				continue // not an end (a heartbeat, say)
			}
			if left, err := strconv.Atoi(m.Header.Get("Nats-Pending-Messages")); err == nil {
				pending = max(0, pending-left)
			} else if strings.HasSuffix(m.Subject, "."+strconv.FormatUint(n, 36)) {
				pending = 0 // the newest request ended, and how much it left is not said
			}
			if pending <= p.batch/2 {
				request()
			}
			continue
		}
		each(&msg{m: m, nc: p.nc})
		if pending--; pending <= p.batch/2 {
			request()
		}
	}
}

// pause waits d unless ctx ends first; it reports whether ctx is still live.
func pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// msg is a pulled message with the jetstream package's Msg methods; acknowledgements are
// published to its reply subject as the JetStream API defines them.
type msg struct {
	m  *nats.Msg
	nc *nats.Conn
}

func (x *msg) Data() []byte         { return x.m.Data }
func (x *msg) Headers() nats.Header { return x.m.Header }
func (x *msg) Subject() string      { return x.m.Subject }
func (x *msg) Reply() string        { return x.m.Reply }
func (x *msg) Ack() error           { return x.nc.Publish(x.m.Reply, []byte("+ACK")) }
func (x *msg) Nak() error           { return x.nc.Publish(x.m.Reply, []byte("-NAK")) }
func (x *msg) InProgress() error    { return x.nc.Publish(x.m.Reply, []byte("+WPI")) }
func (x *msg) Term() error          { return x.nc.Publish(x.m.Reply, []byte("+TERM")) }
func (x *msg) TermWithReason(r string) error {
	return x.nc.Publish(x.m.Reply, []byte("+TERM "+r))
}

func (x *msg) NakWithDelay(d time.Duration) error {
	return x.nc.Publish(x.m.Reply, []byte(`-NAK {"delay": `+strconv.FormatInt(d.Nanoseconds(), 10)+`}`))
}

// DoubleAck acks and waits for the server to confirm.
func (x *msg) DoubleAck(ctx context.Context) error {
	_, err := x.nc.RequestWithContext(ctx, x.m.Reply, []byte("+ACK"))
	return err
}

// Metadata reads the reply subject: "$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer
// seq>.<timestamp>.<pending>", or the same after a domain and an account hash (and a token more).
func (x *msg) Metadata() (*jetstream.MsgMetadata, error) {
	t := strings.Split(x.m.Reply, ".")
	if len(t) < 9 || t[0] != "$JS" || t[1] != "ACK" {
		return nil, jetstream.ErrNotJSMessage
	}
	var domain string
	if len(t) >= 12 {
		domain = t[2]
		if domain == "_" {
			domain = ""
		}
		t = t[4:] // after the domain and the account hash: <stream>...
	} else {
		t = t[2:]
	}
	var nums [5]uint64
	for i := range nums {
		v, err := strconv.ParseUint(t[2+i], 10, 64)
		if err != nil {
			return nil, jetstream.ErrNotJSMessage
		}
		nums[i] = v
	}
	return &jetstream.MsgMetadata{
		Stream: t[0], Consumer: t[1], Domain: domain,
		NumDelivered: nums[0],
		Sequence:     jetstream.SequencePair{Stream: nums[1], Consumer: nums[2]},
		Timestamp:    time.Unix(0, int64(nums[3])),
		NumPending:   nums[4],
	}, nil
}
