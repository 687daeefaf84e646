// Package jsasync publishes messages to JetStream streams without waiting for each one, like the
// jetstream package's PublishMsgAsync, with less work per message: every reply comes to one
// wildcard subscription, a pending publish is a map entry and a channel closed once, and the
// PubAck's sequence is read without reflection (the JSON decoder, and its allocations, only
// for an error). A W1 branch publishes twice (its task, its outcome): the jetstream package's
// acknowledgement path was about 5% of the whole process's CPU there.
package jsasync

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Errors a Future can end with, besides the stream's own (*jetstream.APIError) and
// jetstream.ErrNoStreamResponse.
var (
	ErrTimeout = errors.New("jsasync: no PubAck in time")
	ErrClosed  = errors.New("jsasync: publisher closed")
	ErrStalled = errors.New("jsasync: too many publishes awaiting their PubAck")
)

// Publisher publishes messages and collects their PubAcks. It is safe for concurrent use.
type Publisher struct {
	nc      *nats.Conn
	prefix  string // reply subjects: prefix + a publish's id in base 36
	timeout time.Duration
	room    chan struct{} // a token per publish awaiting its PubAck

	mu      sync.Mutex
	sub     *nats.Subscription
	next    uint64
	pending map[uint64]*Future
	sweep   *time.Timer // armed while anything is pending
	closed  bool
}

// Future is one publish. Done is closed once Result is known.
type Future struct {
	done chan struct{}
	seq  uint64
	err  error
	sent time.Time
}

// Done is closed when the PubAck (or an error) has come.
func (f *Future) Done() <-chan struct{} { return f.done }

// Result is the stored message's stream sequence, or why it was not stored. Call it once Done
// is closed.
func (f *Future) Result() (uint64, error) { return f.seq, f.err }

// New returns a publisher that lets maxPending publishes await their PubAck at once and fails a
// publish whose PubAck has not come within timeout (lost in a stream leader change, say).
func New(nc *nats.Conn, maxPending int, timeout time.Duration) (*Publisher, error) {
	p := &Publisher{nc: nc, prefix: nc.NewRespInbox() + ".", timeout: timeout, room: make(chan struct{}, maxPending),
		pending: map[uint64]*Future{}}
	sub, err := nc.Subscribe(p.prefix+"*", p.reply)
	if err != nil {
		return nil, fmt.Errorf("jsasync: subscribe for PubAcks: %w", err)
	}
	p.sub = sub
	return p, nil
}

// Publish sends m (its Reply is set here) and returns at once, unless maxPending publishes
// await their PubAck: then it waits up to stall for one of them, and fails with ErrStalled.
func (p *Publisher) Publish(m *nats.Msg, stall time.Duration) (*Future, error) {
	select {
	case p.room <- struct{}{}:
	default:
		t := time.NewTimer(stall)
		select {
		case p.room <- struct{}{}:
			t.Stop()
		case <-t.C:
			return nil, ErrStalled
		}
	}
	f := &Future{done: make(chan struct{}), sent: time.Now()}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.room
		return nil, ErrClosed
	}
	p.next++
	id := p.next
	p.pending[id] = f
	if p.sweep == nil {
		p.sweep = time.AfterFunc(p.timeout/2, p.expire)
	}
	p.mu.Unlock()
	m.Reply = string(strconv.AppendUint(append(make([]byte, 0, len(p.prefix)+13), p.prefix...), id, 36))
	if err := p.nc.PublishMsg(m); err != nil {
		p.settle(id, 0, err)
		return nil, err
	}
	return f, nil
}

// reply settles the publish a PubAck answers.
func (p *Publisher) reply(m *nats.Msg) {
	id, err := strconv.ParseUint(m.Subject[len(p.prefix):], 36, 64)
	if err != nil {
		return
	}
	seq, err := parsePubAck(m)
	p.settle(id, seq, err)
}

func (p *Publisher) settle(id, seq uint64, err error) {
	p.mu.Lock()
	f := p.pending[id]
	delete(p.pending, id)
	p.mu.Unlock()
	if f == nil {
		return // timed out already, or a stray reply
	}
	f.seq, f.err = seq, err
	close(f.done)
	<-p.room
}

// expire fails the publishes whose PubAck is overdue, and comes back while any is pending.
func (p *Publisher) expire() {
	now := time.Now()
	p.mu.Lock()
	var overdue []uint64
	for id, f := range p.pending {
		if now.Sub(f.sent) >= p.timeout {
			overdue = append(overdue, id)
		}
	}
	p.mu.Unlock()
	for _, id := range overdue {
		p.settle(id, 0, ErrTimeout)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.pending) > 0 && !p.closed {
		p.sweep.Reset(p.timeout / 2)
	} else {
		p.sweep = nil
	}
}

// Close fails every publish still awaiting its PubAck and stops listening for PubAcks.
func (p *Publisher) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	if p.sweep != nil {
		p.sweep.Stop()
		p.sweep = nil
	}
	ids := make([]uint64, 0, len(p.pending))
	for id := range p.pending {
		ids = append(ids, id)
	}
	p.mu.Unlock()
	_ = p.sub.Unsubscribe()
	for _, id := range ids {
		p.settle(id, 0, ErrClosed)
	}
}

var (
	errorKey = []byte(`"error"`)
	seqKey   = []byte(`"seq":`)
)

// parsePubAck reads a PubAck: {"stream":…,"seq":N,…} or {"error":{…}}; a reply with no body
// and status 503 says no stream took the message.
func parsePubAck(m *nats.Msg) (uint64, error) {
	data := m.Data
	if len(data) == 0 {
		if m.Header.Get("Status") == "503" {
			return 0, jetstream.ErrNoStreamResponse
		}
		return 0, fmt.Errorf("jsasync: empty PubAck (status %q)", m.Header.Get("Status"))
	}
	if bytes.Contains(data, errorKey) {
		var resp struct {
			Error *jetstream.APIError `json:"error"`
		}
		if err := json.Unmarshal(data, &resp); err != nil {
			return 0, fmt.Errorf("jsasync: unreadable PubAck %q", data)
		}
		if resp.Error != nil {
			return 0, resp.Error
		}
	}
	i := bytes.Index(data, seqKey)
	if i < 0 {
		return 0, fmt.Errorf("jsasync: PubAck without a sequence: %q", data)
	}
	digits := data[i+len(seqKey):]
	for len(digits) > 0 && digits[0] == ' ' {
		digits = digits[1:]
	}
	n := 0
	for n < len(digits) && digits[n] >= '0' && digits[n] <= '9' {
		n++
	}
	seq, err := strconv.ParseUint(string(digits[:n]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("jsasync: PubAck with a bad sequence: %q", data)
	}
	return seq, nil
}
