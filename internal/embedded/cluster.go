package embedded

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Cluster is several embedded servers routed into one NATS cluster with JetStream, on loopback:
// the topology of a production deployment, in one process, for tests. Streams and buckets on it
// should use 3 replicas.
type Cluster struct {
	mu    sync.Mutex
	nodes []*Server
}

// StartCluster starts n servers (n >= 3 for a JetStream quorum that survives a node) with stores
// under dir, and waits until JetStream is ready on every node.
func StartCluster(dir string, n int) (*Cluster, error) {
	if n < 1 {
		return nil, errors.New("embedded: a cluster needs at least one node")
	}
	clientPorts, routePorts := make([]int, n), make([]int, n)
	for i := range n {
		var err error
		if clientPorts[i], err = freePort("127.0.0.1"); err != nil {
			return nil, err
		}
		if routePorts[i], err = freePort("127.0.0.1"); err != nil {
			return nil, err
		}
	}
	var routes []*url.URL
	for _, p := range routePorts {
		routes = append(routes, &url.URL{Scheme: "nats", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(p))})
	}
	c := &Cluster{}
	for i := range n {
		c.nodes = append(c.nodes, &Server{opts: server.Options{
			ServerName: fmt.Sprintf("jetflow-node-%d", i),
			Host:       "127.0.0.1",
			Port:       clientPorts[i],
			JetStream:  true,
			StoreDir:   filepath.Join(dir, fmt.Sprintf("node-%d", i)),
			NoSigs:     true,
			NoLog:      true,
			MaxPayload: 1 << 20,
			Cluster: server.ClusterOpts{Name: "jetflow", Host: "127.0.0.1", Port: routePorts[i],
				ConnectRetries: 30, PoolSize: -1},
			Routes: routes,
		}})
	}
	// Start them together: JetStream's meta group needs a quorum before any is ready.
	errs := make(chan error, n)
	for _, s := range c.nodes {
		go func() { errs <- s.startNoWait() }()
	}
	for range n {
		if err := <-errs; err != nil {
			c.Shutdown()
			return nil, err
		}
	}
	if err := c.waitReady(30 * time.Second); err != nil {
		c.Shutdown()
		return nil, err
	}
	return c, nil
}

// startNoWait starts the server without waiting for JetStream.
func (s *Server) startNoWait() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	opts := s.opts
	srv, err := server.NewServer(&opts)
	if err != nil {
		return fmt.Errorf("embedded: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return errors.New("embedded: node not ready after 30s")
	}
	s.srv = srv
	return nil
}

// waitReady waits until every running node's JetStream is current and the meta leader sees every
// running node online (before that, placing a replicated stream can fail for want of peers).
func (c *Cluster) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		current, running, peers := true, 0, -1
		c.mu.Lock()
		for _, s := range c.nodes {
			s.mu.Lock()
			if s.srv != nil {
				running++
				if !s.srv.JetStreamIsCurrent() {
					current = false
				}
				if s.srv.JetStreamIsLeader() {
					peers = len(s.srv.JetStreamClusterPeers())
				}
			}
			s.mu.Unlock()
		}
		c.mu.Unlock()
		if current && peers == running {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("embedded: cluster's JetStream not ready")
}

// URL lists every node's URL, comma-separated, as nats.Connect accepts.
func (c *Cluster) URL() string {
	urls := make([]string, len(c.nodes))
	for i, s := range c.nodes {
		urls[i] = s.URL()
	}
	return strings.Join(urls, ",")
}

// Nodes is the number of nodes.
func (c *Cluster) Nodes() int { return len(c.nodes) }

// Node returns node i.
func (c *Cluster) Node(i int) *Server { return c.nodes[i] }

// NodeIndex returns the index of the node with the given server name, or -1.
func (c *Cluster) NodeIndex(name string) int {
	for i, s := range c.nodes {
		if s.opts.ServerName == name {
			return i
		}
	}
	return -1
}

// StopNode stops node i, as a crash would.
func (c *Cluster) StopNode(i int) { c.nodes[i].Shutdown() }

// StartNode starts node i again on its port and store, and waits until it is current.
func (c *Cluster) StartNode(i int) error {
	if err := c.nodes[i].startNoWait(); err != nil {
		return err
	}
	return c.waitReady(30 * time.Second)
}

// Shutdown stops every node.
func (c *Cluster) Shutdown() {
	var wg sync.WaitGroup
	for _, s := range c.nodes {
		wg.Go(s.Shutdown)
	}
	wg.Wait()
}
