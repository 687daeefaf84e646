package coordinator

import (
	"context"
	"errors"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow/jetflow/messages"
)

// Partitions are shared among the running coordinators with leases in LeaseBucket, whose entries
// expire LeaseTTL after their last write:
//
//   - "c<id>": a coordinator's presence, renewed every LeaseTTL/3; the live coordinators are the
//     keys present, and each aims to hold ceil(Partitions / live) partitions.
//   - "p<n>": the lease of partition n, created by the coordinator that takes it (create-if-absent,
//     so one holder at a time) and renewed by compare-and-set. A renewal that fails means the lease
//     is lost: the partition's loops stop at once.
//
// A coordinator that stops releases its leases, so others take them at their next tick; one that
// dies loses them when they expire. The state a partition's loops write is compare-and-set, so even
// a holder that has not yet noticed a lost lease cannot overwrite another's work.

type heldPartition struct {
	rev    uint64
	cancel context.CancelFunc
	done   chan struct{}
}

func (c *Coordinator) leaseLoop(ctx context.Context) {
	held := map[int]*heldPartition{}
	var presenceRev uint64
	tick := time.NewTicker(c.cfg.LeaseTTL / 3)
	defer tick.Stop()
	defer func() {
		defer c.publishHeld(nil)
		// Stopping: stop every partition's loops, then release the leases for others to take.
		for p, h := range held {
			h.cancel()
			<-h.done
			_ = c.leases.Delete(context.Background(), leaseKey(p), jetstream.LastRevision(h.rev))
		}
		_ = c.leases.Delete(context.Background(), "c"+c.cfg.ID)
	}()
	for {
		presenceRev = c.renewPresence(ctx, presenceRev)
		c.balance(ctx, held)
		c.publishHeld(held)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (c *Coordinator) renewPresence(ctx context.Context, rev uint64) uint64 {
	key := "c" + c.cfg.ID
	if rev != 0 {
		if r, err := c.leases.Update(ctx, key, []byte(c.cfg.ID), rev); err == nil {
			return r
		}
	}
	r, err := c.leases.Put(ctx, key, []byte(c.cfg.ID))
	if err != nil {
		c.log.Debug("presence not renewed", "error", err)
		return 0
	}
	return r
}

// balance renews the leases held, takes free partitions up to this coordinator's share, and
// releases any beyond it.
func (c *Coordinator) balance(ctx context.Context, held map[int]*heldPartition) {
	live := c.liveCoordinators(ctx)
	share := int(math.Ceil(float64(messages.Partitions) / float64(max(1, live))))
	for p, h := range held {
		rev, err := c.leases.Update(ctx, leaseKey(p), []byte(c.cfg.ID), h.rev)
		if err != nil {
			c.log.Warn("partition lease lost", "partition", p, "error", err)
			h.cancel()
			<-h.done
			delete(held, p)
			continue
		}
		h.rev = rev
	}
	// Start from a different partition on each coordinator, so that they do not all race for the
	// same free ones.
	offset := messages.Partition(c.cfg.ID)
	for i := range messages.Partitions {
		if len(held) >= share || ctx.Err() != nil {
			break
		}
		p := (offset + i) % messages.Partitions
		if held[p] != nil {
			continue
		}
		rev, err := c.leases.Create(ctx, leaseKey(p), []byte(c.cfg.ID))
		if err != nil {
			continue // held by another
		}
		held[p] = c.startPartition(ctx, p, rev)
	}
	for p, h := range held {
		if len(held) <= share {
			break
		}
		h.cancel()
		<-h.done
		_ = c.leases.Delete(ctx, leaseKey(p), jetstream.LastRevision(h.rev))
		delete(held, p)
		c.log.Info("partition released", "partition", p)
	}
}

func (c *Coordinator) startPartition(ctx context.Context, p int, rev uint64) *heldPartition {
	pctx, cancel := context.WithCancel(ctx)
	h := &heldPartition{rev: rev, cancel: cancel, done: make(chan struct{})}
	c.log.Info("partition taken", "partition", p)
	go func() {
		defer close(h.done)
		for pctx.Err() == nil {
			err := c.runPartition(pctx, p)
			if err == nil || pctx.Err() != nil {
				return
			}
			c.log.Warn("partition loops failed; retrying", "partition", p, "error", err)
			sleep(pctx, time.Second)
		}
	}()
	return h
}

func (c *Coordinator) liveCoordinators(ctx context.Context) int {
	lister, err := c.leases.ListKeys(ctx)
	if err != nil {
		if !errors.Is(err, jetstream.ErrNoKeysFound) {
			c.log.Debug("cannot list coordinators", "error", err)
		}
		return 1
	}
	n := 0
	for k := range lister.Keys() {
		if strings.HasPrefix(k, "c") {
			n++
		}
	}
	return max(1, n)
}

func leaseKey(p int) string { return "p" + strconv.Itoa(p) }

func (c *Coordinator) publishHeld(held map[int]*heldPartition) {
	ps := make([]int, 0, len(held))
	for p := range held {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	c.mu.Lock()
	c.held = ps
	c.mu.Unlock()
}

// Partitions lists the partitions this coordinator drives now.
func (c *Coordinator) Partitions() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.held)
}
