package durabletest

import "go.uber.org/goleak"

// KnownLeaks are goroutines that libraries jetflow uses may leave behind, for goleak:
//
//	func TestMain(m *testing.M) { goleak.VerifyTestMain(m, durabletest.KnownLeaks()...) }
//
// nats.go's jetstream starts a goroutine per JetStream context that publishes asynchronously; if
// the connection closes while it starts, it can block for ever on a channel it read as nil
// (nats.go v1.55.0, jetstream/publish.go, resetPendingAcksOnReconnect).
func KnownLeaks() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreTopFunction("github.com/nats-io/nats.go/jetstream.(*jetStream).resetPendingAcksOnReconnect"),
	}
}
