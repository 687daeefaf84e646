// Package client starts executions, waits for their results, and describes them.
//
// Start publishes a StartExecution event to JetStream and returns the execution id once the
// event is stored: from then on nothing is lost, whatever crashes. Result watches the execution's
// record until it ends. Describe reads the execution and its checkpoints as a tree of operations.
package client
