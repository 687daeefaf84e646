package embedded

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"

	"github.com/nats-io/nats.go"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Options configure an embedded server. The zero value (plus StoreDir) is a single server on a
// random loopback port.
type Options struct {
	// StoreDir is where JetStream keeps its files. Required.
	StoreDir string
	// Host to listen on; default 127.0.0.1.
	Host string
	// Port to listen on; 0 picks a free one.
	Port int
	// SyncAlways fsyncs every write (slower; survives power loss of a single server).
	SyncAlways bool
	// Logs enables the server's own log output.
	Logs bool
}

// Server is a running embedded nats-server that can be restarted on the same port and store.
type Server struct {
	mu   sync.Mutex
	opts server.Options
	srv  *server.Server
}

// Start starts a server and waits until it accepts connections.
func Start(o Options) (*Server, error) {
	if o.StoreDir == "" {
		return nil, errors.New("embedded: StoreDir is required")
	}
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.Port == 0 {
		p, err := freePort(o.Host)
		if err != nil {
			return nil, err
		}
		o.Port = p
	}
	s := &Server{opts: server.Options{
		ServerName: "jetflow-" + strconv.Itoa(o.Port),
		Host:       o.Host,
		Port:       o.Port,
		JetStream:  true,
		StoreDir:   o.StoreDir,
		SyncAlways: o.SyncAlways,
		NoSigs:     true,
		NoLog:      !o.Logs,
		MaxPayload: 1 << 20,
	}}
	if err := s.start(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Server) start() error {
	opts := s.opts
	srv, err := server.NewServer(&opts)
	if err != nil {
		return fmt.Errorf("embedded: %w", err)
	}
	if !s.opts.NoLog {
		srv.ConfigureLogger()
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return errors.New("embedded: server not ready after 10s")
	}
	s.srv = srv
	return nil
}

// URL is the nats:// URL clients connect to.
func (s *Server) URL() string {
	return fmt.Sprintf("nats://%s", net.JoinHostPort(s.opts.Host, strconv.Itoa(s.opts.Port)))
}

// Shutdown stops the server and waits until it has stopped. Safe to call twice.
func (s *Server) Shutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv == nil {
		return
	}
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
	s.srv = nil
}

// Restart stops the server and starts it again on the same port and store directory, as a crash
// and restart would. Connected clients reconnect by themselves.
func (s *Server) Restart() error {
	s.Shutdown()
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	// The port can take a moment to be free again; retry briefly.
	for range 50 {
		if err = s.start(); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("embedded: find a free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("embedded: find a free port: %w", err)
	}
	return port, nil
}

// InProcess is a connection option that reaches this server in memory, not over TCP.
func (s *Server) InProcess() nats.Option {
	s.mu.Lock()
	defer s.mu.Unlock()
	return nats.InProcessServer(s.srv)
}
