// Package worker runs handlers. A Worker consumes the tasks of the functions registered on it
// (one durable JetStream consumer per function, shared by every worker of the fleet), loads the
// execution's input and checkpoints, runs the handler with replay, reports how the invocation
// ended to the coordinator, and only then acks the task.
//
// Many invocations run at once (Config.MaxConcurrent); handlers mostly wait on I/O. A long
// invocation keeps its task with in-progress heartbeats; a worker that dies stops sending them,
// and JetStream hands the task to another worker after Config.AckWait. A panic in a handler fails
// only its own execution. Stop drains: it stops taking tasks and waits for those in hand.
//
// A task for a function that no worker has registered stays queued in its stream until a worker
// registers the function.
package worker
