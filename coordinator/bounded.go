package coordinator

import "sync"

// bounded is a map safe for concurrent use that holds at most max entries: past that, an arbitrary
// entry goes (whoever needs it reads it again from KV). A partition keeps its running executions
// and batches in two, born empty when the partition is taken.
type bounded[V any] struct {
	mu  sync.Mutex
	m   map[string]V
	max int
}

func newBounded[V any](max int) *bounded[V] { return &bounded[V]{m: map[string]V{}, max: max} }

func (c *bounded[V]) get(key string) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[key]
	return v, ok
}

func (c *bounded[V]) put(key string, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[key]; !ok && len(c.m) >= c.max {
		for k := range c.m {
			delete(c.m, k)
			break
		}
	}
	c.m[key] = v
}

func (c *bounded[V]) drop(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, key)
}

// each calls fn with every entry (fn must not use the cache).
func (c *bounded[V]) each(fn func(key string, v V)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, v := range c.m {
		fn(k, v)
	}
}
