package worker_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/durable"
	"github.com/jetflow/jetflow/worker"
)

func TestNewValidatesConfig(t *testing.T) {
	nc := &nats.Conn{} // New does not use the connection until Start
	for _, tc := range []struct {
		cfg   worker.Config
		field string
	}{
		{worker.Config{MaxConcurrent: -1}, "Config.MaxConcurrent"},
		{worker.Config{AckWait: -time.Second}, "Config.AckWait"},
		{worker.Config{AckWait: time.Millisecond}, "Config.AckWait"},
		{worker.Config{Replicas: 7}, "Config.Replicas"},
	} {
		_, err := worker.New(nc, &tc.cfg)
		require.ErrorContains(t, err, tc.field)
	}
	_, err := worker.New(nil, nil)
	require.ErrorContains(t, err, "nil NATS connection")
	w, err := worker.New(nc, nil)
	require.NoError(t, err)
	require.NotNil(t, w)
}

func TestRegisterRejectsBadNamesAndDuplicates(t *testing.T) {
	w, err := worker.New(&nats.Conn{}, nil)
	require.NoError(t, err)
	h := func(durable.Context, string) (string, error) { return "", nil }
	require.PanicsWithValue(t, `worker: Register: messages: invalid name: function name "a.b": want 1-128 of [A-Za-z0-9_-]`,
		func() { worker.Register(w, "a.b", h) })
	worker.Register(w, "ok", h)
	require.Panics(t, func() { worker.Register(w, "ok", h) })
	require.Equal(t, []string{"ok"}, w.Functions())
}
