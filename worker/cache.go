package worker

import (
	"container/list"
	"sync"

	"github.com/jetflow/jetflow/internal/engine"
)

// branchCache keeps the branch lists of the batches this worker has replayed to, so that a
// batch's later branches run without replaying the handler (DESIGN.md: the parent is replayed at
// most once per worker per batch). It also remembers batches reported complete, whose remaining
// tasks are dropped. Bounded: the least recently used entry goes first.
type branchCache struct {
	mu      sync.Mutex
	max     int
	order   *list.List // of string keys, most recent at the front
	m       map[string]*cacheEntry
	pending map[string]chan struct{} // batches being replayed to: closed when they are cached
}

type cacheEntry struct {
	batch     *engine.CachedBatch
	abandoned bool
	elem      *list.Element
}

func newBranchCache(max int) *branchCache {
	return &branchCache{max: max, order: list.New(), m: map[string]*cacheEntry{}, pending: map[string]chan struct{}{}}
}

// Get implements engine.BranchCache.
func (c *branchCache) Get(key string) *engine.CachedBatch {
	b, _ := c.lookup(key)
	return b
}

// lookup returns the cached batch and whether the batch is known to be complete.
func (c *branchCache) lookup(key string) (*engine.CachedBatch, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.m[key]
	if e == nil {
		return nil, false
	}
	c.order.MoveToFront(e.elem)
	return e.batch, e.abandoned
}

// claim makes the caller the one that replays to batch key, unless another already does: then it
// returns a channel closed once that replay has cached the batch (or given up). Without this, a
// worker that meets a batch's branches for the first time would replay the handler, and read
// every checkpoint of the execution, once per branch task in hand instead of once.
func (c *branchCache) claim(key string) (wait <-chan struct{}, leader bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ch, ok := c.pending[key]; ok {
		return ch, false
	}
	c.pending[key] = make(chan struct{})
	return nil, true
}

// release ends a claim (the replay cached the batch, or could not).
func (c *branchCache) release(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.releaseLocked(key)
}

func (c *branchCache) releaseLocked(key string) {
	if ch, ok := c.pending[key]; ok {
		close(ch)
		delete(c.pending, key)
	}
}

// Put implements engine.BranchCache.
func (c *branchCache) Put(key string, b *engine.CachedBatch) {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.releaseLocked(key)
	if e := c.m[key]; e != nil {
		if !e.abandoned {
			e.batch = b
		}
		c.order.MoveToFront(e.elem)
		return
	}
	c.insert(key, &cacheEntry{batch: b})
}

// abandon records that the batch completed: its cached branches are no longer needed, and any
// task of it still to come is dropped.
func (c *branchCache) abandon(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.m[key]; e != nil {
		e.batch, e.abandoned = nil, true
		return
	}
	c.insert(key, &cacheEntry{abandoned: true})
}

func (c *branchCache) insert(key string, e *cacheEntry) {
	e.elem = c.order.PushFront(key)
	c.m[key] = e
	for c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.m, last.Value.(string))
	}
}

// Len is the number of entries.
func (c *branchCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
