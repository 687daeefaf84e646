package service

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
)

// DefaultURL is where the binaries look for NATS when neither --nats nor NATS_URL says otherwise.
const DefaultURL = "nats://127.0.0.1:4222"

// URL returns flagValue, else $NATS_URL, else DefaultURL.
func URL(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	if env := os.Getenv("NATS_URL"); env != "" {
		return env
	}
	return DefaultURL
}

// Connect connects to url, reconnecting for ever after a lost connection; opts come last (an
// embedded server's InProcess, say).
func Connect(url, name string, log *slog.Logger, opts ...nats.Option) (*nats.Conn, error) {
	all := append([]nats.Option{nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected from NATS", "error", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("reconnected to NATS", "url", c.ConnectedUrl()) })}, opts...)
	nc, err := nats.Connect(url, all...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", url, err)
	}
	return nc, nil
}

// SignalContext is ctx cancelled on SIGINT or SIGTERM.
func SignalContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
}

// Logger is the binaries' logger: text on stderr at the given level ("debug", "info", "warn").
func Logger(level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}

// Conn is a NATS connection with a Close that fits a list of stop functions.
type Conn struct{ NC *nats.Conn }

// Dial is Connect returning a *Conn.
func Dial(url, name string, log *slog.Logger, opts ...nats.Option) (*Conn, error) {
	nc, err := Connect(url, name, log, opts...)
	if err != nil {
		return nil, err
	}
	return &Conn{NC: nc}, nil
}

// Close drains the connection, at most until ctx ends.
func (c *Conn) Close(ctx context.Context) error {
	c.NC.Close()
	return nil
}
