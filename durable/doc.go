// Package durable is the jetflow SDK: what a handler uses to make its work durable.
//
// A handler is a function func(durable.Context, I) (O, error) registered on workers under a
// function name. Each durable operation it calls — [Step], [RunInChildContext], [Wait] — is
// checkpointed in NATS JetStream. When the handler runs again (after a crash, after a wait, on
// another worker), it replays from the top: every operation that already has a checkpoint
// returns the stored outcome without running again, and the first one that has none runs for
// real.
//
// # Determinism rules
//
// Replay works because an operation is identified by its position — its parent's id and its
// sequence number within the parent — never by its name. So a handler must call the same durable
// operations in the same order on every run:
//
//   - Do not branch on anything that can change between runs (time.Now, random numbers, a map's
//     iteration order, data read outside a step) before a durable operation. Put such reads
//     inside a Step: its result is checkpointed and the same on every replay.
//   - Side effects belong inside steps. Code between operations runs again on every replay.
//   - Call durable operations from the goroutine that received the Context, one at a time.
//   - Names are labels for people, and are checked: if replay finds, at a position, an operation
//     of another kind or name than the checkpoint there, the execution fails with a
//     *NonDeterminismError instead of corrupting state.
//
// # Parallel and Map
//
// [Parallel] and [Map] run a large batch's branches across the whole fleet: a branch runs on some
// worker by replaying the handler up to the batch (everything before it comes from checkpoints)
// and then calling only that branch's function. A small batch (16 branches or fewer, by default)
// runs inline, on the worker that reaches it, with each branch's outcome checkpointed as it
// finishes; [WithPlacement] chooses either way. So a branch function may capture the handler's local
// variables — as long as those are computed deterministically, from the input or from durable
// operations. A branch receives its own Context: call durable operations on it, never on the
// handler's. When a batch completes early (a completion policy met), the branches still running
// are abandoned: their Context is cancelled wherever they run and nothing they do afterwards
// counts. See [Parallel] for the rules of the result.
//
// # Cancellation
//
// An execution cancelled (client.Cancel) or timed out (client.WithTimeout) ends at once, and every
// Context of it — the handler's and every branch's, on every worker — is cancelled. A step body
// that returns after that records nothing, and the code that called it does not go on; a handler
// that notices on its own (ctx.Done) and calls Parallel or Map gets an error wrapping
// context.Canceled. Nothing more of the execution is dispatched.
//
// # Suspension
//
// When an invocation cannot go on — a [Wait] whose timer is not due, a step waiting out its retry
// backoff, a [Parallel] whose branches still run — the operation does not return: the SDK ends the handler's goroutine with
// runtime.Goexit (deferred functions run; recover cannot intercept it) and the worker is free for
// other work. When the timer fires, the handler is replayed on any worker. A handler that keeps
// going in another goroutine cannot record anything after that point.
//
// # Errors
//
// A step that fails after its retries returns a *StepError with the type name and message of the
// error its body returned, the same live and on replay. A panic in a step body is a failed attempt
// of type "Panic"; a panic in the handler fails the execution with the panic message and never
// crashes the worker. An error can name its own type in records by implementing
// ErrorTypeName() string.
//
// # Results
//
// Step and child-context results are stored as msgpack and decoded into the result type, on the
// first run as on replay, so the caller sees the same value either way. Use exported fields (or
// msgpack tags) in result types.
package durable
