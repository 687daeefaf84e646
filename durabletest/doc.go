// Package durabletest is the environment in which handlers are tested: a real embedded NATS
// server with JetStream (file store in t.TempDir()), coordinators and workers in one process, all
// stopped on t.Cleanup. The project's own end-to-end and fault tests run in it too, through the
// fault-injection methods (KillWorker, RestartServer, ...).
//
//	func TestOrder(t *testing.T) {
//		env := durabletest.New(t)
//		durabletest.Register(env, "order", orderHandler)
//		out, err := durabletest.Run[Receipt](env, "order", Order{ID: "o-1"})
//		...
//	}
package durabletest
