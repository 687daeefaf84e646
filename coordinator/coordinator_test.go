package coordinator_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/coordinator"
)

func TestNewValidatesConfig(t *testing.T) {
	nc := &nats.Conn{}
	for _, tc := range []struct {
		cfg   coordinator.Config
		field string
	}{
		{coordinator.Config{Replicas: -1}, "Config.Replicas"},
		{coordinator.Config{AckWait: -time.Second}, "Config.AckWait"},
		{coordinator.Config{BatchSize: -2}, "Config.BatchSize"},
	} {
		_, err := coordinator.New(nc, &tc.cfg)
		require.ErrorContains(t, err, tc.field)
	}
	_, err := coordinator.New(nil, nil)
	require.ErrorContains(t, err, "nil NATS connection")
	c, err := coordinator.New(nc, nil)
	require.NoError(t, err)
	require.NotNil(t, c)
}
