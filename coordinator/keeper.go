package coordinator

import (
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow/jetflow/messages"
)

// Keepers. A file-stored work-queue stream whose last message is acked deletes its last block's
// file and creates a new one (nats-server 2.15 replaces an empty last block at once). In a stream
// that empties after every message — one execution after another — that is three file creations
// and deletions per execution, about a quarter of its CPU on this host (docs/DESIGN.md). A message
// that no consumer takes keeps the last block from emptying: while the coordinator handles events
// or branch outcomes, it places one in each work-queue stream, at most once per keeperEvery, and
// each expires after keeperTTL. When the last block rolls over to a new file, the next keeper
// lands in that one. On a server that cannot expire messages (before nats-server 2.11) no
// keepers are placed.
const (
	keeperEvery = time.Second
	keeperTTL   = 30 * time.Second
)

// keepersDue is called for each event and each fetch of branch outcomes; it places keepers if
// keeperEvery has passed since the last ones (keeperClock re-arms it). Their PubAcks are not
// awaited: a keeper that is not stored costs some file churn, nothing else.
func (c *Coordinator) keepersDue() {
	if !c.keeperDue.CompareAndSwap(true, false) {
		return
	}
	for _, subject := range []string{messages.TaskKeeperSubject, messages.EventKeeperSubject} {
		m := &nats.Msg{Subject: subject, Header: nats.Header{jetstream.MsgTTLHeader: []string{keeperTTL.String()}}}
		if _, err := c.pub.Publish(m, 0); err != nil {
			c.log.Debug("keeper not placed", "subject", subject, "error", err)
		}
	}
}

// keeperClock re-arms keepersDue every keeperEvery until stop closes.
func (c *Coordinator) keeperClock(stop <-chan struct{}) {
	t := time.NewTicker(keeperEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			c.keeperDue.Store(true)
		}
	}
}
