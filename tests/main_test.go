// Package tests holds jetflow's end-to-end and fault tests. Each runs against a real embedded
// JetStream through durabletest.
package tests

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/jetflow/jetflow/durabletest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, durabletest.KnownLeaks()...) }
