package messages

import (
	"errors"
	"fmt"
	"strconv"
)

// Stream, bucket and subject names. They are part of the protocol: changing one strands the
// executions stored under the old name.
const (
	// TaskStream is a work-queue stream of RunTask messages, one durable consumer per function.
	TaskStream = "JETFLOW_TASKS"
	// EventStream is a work-queue stream of the events the coordinator folds into execution state.
	EventStream = "JETFLOW_EVENTS"

	// ExecutionBucket is the KV bucket of Execution records, keyed by execution id.
	ExecutionBucket = "jetflow-executions"
	// CheckpointBucket is the KV bucket of Checkpoint records, keyed "<execution>.<operation>".
	CheckpointBucket = "jetflow-checkpoints"
	// BatchBucket is the KV bucket of the coordinator's Batch records, keyed "<execution>.<op>",
	// and of completed batches' Rollup records, keyed "<execution>.<op>.<part>" (RollupKey).
	BatchBucket = "jetflow-batches"
	// LeaseBucket holds the coordinators' partition leases ("p<n>") and presence ("c<id>"); its
	// entries expire unless renewed.
	LeaseBucket = "jetflow-leases"

	subjectRoot = "jetflow"
)

// Subject filters that the streams capture.
const (
	TaskSubjects  = subjectRoot + ".task.>"
	EventSubjects = subjectRoot + ".evt.>"
)

// Keeper subjects: in each work-queue stream, where the coordinator places messages that no
// consumer takes, so that the stream's last block is never emptied (coordinator/keeper.go). '~' is
// not allowed in function names or partitions, so no consumer's filter matches them.
const (
	TaskKeeperSubject  = subjectRoot + ".task.~keep"
	EventKeeperSubject = subjectRoot + ".evt.~keep"
)

// StartTaskID is the TaskID of an execution's first invocation.
const StartTaskID = "start"

// TaskSubject is where RunTasks for function go; workers that registered it consume them.
func TaskSubject(function, executionID string) string {
	return subjectRoot + ".task." + function + "." + executionID
}

// TaskFilter matches every task of one function.
func TaskFilter(function string) string { return subjectRoot + ".task." + function + ".>" }

// Partitions is the number of partitions executions are spread over. Each partition is driven
// by one coordinator at a time (a lease in LeaseBucket); its events, timers and branch outcomes are
// on subjects of their own. Part of the protocol: changing it strands stored work.
const Partitions = 8

// Partition is the partition of an execution: FNV-1a (32-bit) of its id, modulo Partitions.
func Partition(executionID string) int {
	h := uint32(2166136261)
	for i := 0; i < len(executionID); i++ {
		h ^= uint32(executionID[i])
		h *= 16777619
	}
	return int(h % Partitions)
}

// EventSubject is where events about one execution go; kind is a short word such as "start".
func EventSubject(executionID, kind string) string {
	return subjectRoot + ".evt." + strconv.Itoa(Partition(executionID)) + "." + executionID + "." + kind
}

// EventFilter matches the events of one partition.
func EventFilter(partition int) string { return subjectRoot + ".evt." + strconv.Itoa(partition) + ".>" }

// TimerSubject is where a durable timer of one operation waits until it is due: among the
// execution's events, so that the coordinator that drives the execution holds it back until it is
// due and then applies it like any other event.
func TimerSubject(executionID, opID string) string { return EventSubject(executionID, "timer-"+opID) }

// BranchRecordID is the id under which branch index of batch op records its outcome: the key
// "<execution>.<op>.<index>.<partition>" has four tokens, where every other checkpoint key has
// two, so a consumer selects one partition's branch outcomes alone (BranchOutcomeFilter).
func BranchRecordID(executionID, opID string, index int) string {
	return opID + "." + strconv.Itoa(index) + "." + strconv.Itoa(Partition(executionID))
}

// InlineRecordID is the operation id of the outcome record of branch index of a batch run inline
// (BatchConfig.Inline): three tokens, which BranchOutcomeFilter does not match, since no
// coordinator counts them.
func InlineRecordID(opID string, index int) string {
	return opID + "." + strconv.Itoa(index)
}

// BranchOutcomeFilter matches the KV stream subjects of one partition's branch outcomes.
func BranchOutcomeFilter(partition int) string {
	return "$KV." + CheckpointBucket + ".*.*.*." + strconv.Itoa(partition)
}

// CheckpointStream is the stream behind CheckpointBucket.
const CheckpointStream = "KV_" + CheckpointBucket

// AbandonSubject is the core NATS subject of Abandon notices for one execution.
func AbandonSubject(executionID string) string { return subjectRoot + ".abandon." + executionID }

// EndedSubject is the core NATS subject on which the coordinator announces, after storing it, that
// an execution ended (the payload is empty; the record is the truth). Clients waiting for a result
// subscribe to it before they read the record.
func EndedSubject(executionID string) string { return subjectRoot + ".ended." + executionID }

// AbandonSubjects matches every Abandon notice.
const AbandonSubjects = subjectRoot + ".abandon.>"

// RollupKey is the key in BatchBucket of part k of the rollup of batch op.
func RollupKey(executionID, opID string, k int) string {
	return executionID + "." + opID + "." + strconv.Itoa(k)
}

// CheckpointKey is the key of one operation's checkpoint.
func CheckpointKey(executionID, opID string) string { return executionID + "." + opID }

// ConsumerName is the durable consumer that workers of one function share.
func ConsumerName(function string) string { return "fn-" + function }

// isToken reports whether s is 1–128 of [A-Za-z0-9_-] (checked on every event: no regexp).
func isToken(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		letter := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
		if !letter && (c < '0' || c > '9') && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

// ErrInvalidName is a function name or execution id that cannot be one.
var ErrInvalidName = errors.New("messages: invalid name")

// ValidateFunction reports whether name can be a function name: 1–128 letters, digits, '_' or '-'
// (it becomes a subject token and a consumer name).
func ValidateFunction(name string) error {
	if !isToken(name) {
		return fmt.Errorf("%w: function name %q: want 1-128 of [A-Za-z0-9_-]", ErrInvalidName, name)
	}
	return nil
}

// ValidateExecutionID reports whether id can be an execution id (or an execution name given by a
// caller): 1–128 letters, digits, '_' or '-'.
func ValidateExecutionID(id string) error {
	if !isToken(id) {
		return fmt.Errorf("%w: execution id %q: want 1-128 of [A-Za-z0-9_-]", ErrInvalidName, id)
	}
	return nil
}

// MaxEventSize is the largest encoded event a worker or client publishes: NATS's default maximum
// payload (1 MiB) less room for headers. Larger results and inputs are refused with a clear error.
const MaxEventSize = 1<<20 - 8<<10

// The public request/reply API, served by every coordinator (queue group APIQueue) over core
// NATS, in JSON or msgpack (docs/PROTOCOL.md): what a client in any language uses.
const (
	APIStartSubject  = subjectRoot + ".api.start"
	APIResultSubject = subjectRoot + ".api.result"
	APICancelSubject = subjectRoot + ".api.cancel"
	APIQueue         = "jetflow-api"
)
