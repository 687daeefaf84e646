package coordinator

import (
	"context"

	"github.com/jetflow/jetflow/internal/jsasync"
	"github.com/jetflow/jetflow/messages"
)

// A rollup gathers the outcome records (what the batch's result is rebuilt from:
// messages.AppendResultFields) of a large batch as this coordinator folds them and
// stores them in parts (messages.Rollup, under messages.RollupKey) as the parts fill, so that
// the code the batch resumes reads a few records instead of one per branch. The batch's
// completed record names the parts (BatchSummary.Rollup) only once every one is stored; until
// then, and whenever a rollup cannot be whole, readers read the branch records themselves.
//
// Only a batch this coordinator opened keeps one: it has folded every outcome the batch counts,
// so the rollup holds exactly the outcomes the summary's done bitmap names. Memory: at most one
// part being filled per running batch.
type rollup struct {
	exec, op string
	part     []byte // entries of the part being filled
	count    int    // entries in part
	fields   []byte // scratch: the fields of one record
	sent     []*jsasync.Future
	broken   bool // a record too large, or a part that could not be sent: no rollup
}

const (
	// rollupMinBranches: smaller batches need none (their outcomes ride on the resume task, or
	// are read in one batched direct get).
	rollupMinBranches = 64
	// rollupPartBytes is the size at which a part is stored (a NATS message holds 1 MiB).
	rollupPartBytes = 256 << 10
	// maxRolledRecord: a batch with a larger outcome record keeps no rollup.
	maxRolledRecord = 64 << 10
)

func newRollup(b *messages.Batch) *rollup {
	if b.Config.N <= rollupMinBranches {
		return nil
	}
	return &rollup{exec: b.ExecutionID, op: b.OpID}
}

// add gathers one counted outcome record, stored at revision rev.
func (r *rollup) add(c *Coordinator, rev uint64, record []byte) {
	if r == nil || r.broken {
		return
	}
	if len(record) > maxRolledRecord {
		r.abandon()
		return
	}
	fields, err := messages.AppendResultFields(r.fields[:0], record)
	if err != nil {
		r.abandon()
		return
	}
	r.fields = fields
	r.part = messages.AppendRollupEntry(r.part, rev, fields)
	r.count++
	if len(r.part) >= rollupPartBytes {
		r.send(c)
	}
}

// send stores the part being filled, without waiting.
func (r *rollup) send(c *Coordinator) {
	data := messages.MustEncode(&messages.Rollup{Count: r.count, Entries: r.part})
	f, ok, err := c.batches.PutAsync(messages.RollupKey(r.exec, r.op, len(r.sent)), data)
	if err != nil || !ok {
		c.log.Debug("batch rollup dropped", "execution", r.exec, "batch", r.op, "error", err)
		r.abandon()
		return
	}
	r.sent = append(r.sent, f)
	r.part, r.count = nil, 0
}

func (r *rollup) abandon() {
	if r == nil {
		return
	}
	r.broken, r.part, r.count, r.sent, r.fields = true, nil, 0, nil, nil
}

// finish stores the last part and waits until every part is stored. It returns how many parts
// there are, or 0 when the rollup is not whole (then readers read the branch records).
func (r *rollup) finish(ctx context.Context, c *Coordinator) int {
	if r == nil || r.broken {
		return 0
	}
	if r.count > 0 {
		r.send(c)
	}
	for _, f := range r.sent {
		if _, err := awaitPubAck(ctx, f); err != nil {
			c.log.Debug("batch rollup not stored", "execution", r.exec, "batch", r.op, "error", err)
			r.abandon()
			return 0
		}
	}
	return len(r.sent)
}
