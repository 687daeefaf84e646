package messages

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// ProtocolVersion is written into every message. A reader rejects a newer version with
// ErrUnsupportedVersion instead of guessing at fields it does not know.
const ProtocolVersion = 1

// Kind says which type a message is. Values are never reused.
type Kind uint8

const (
	KindStartExecution  Kind = 1  // event: a client asks for an execution
	KindInvocationEnded Kind = 2  // event: a worker finished one invocation of a handler
	KindTimerFired      Kind = 3  // event: a durable timer is due
	KindRunTask         Kind = 4  // task: run (or replay) an execution's handler
	KindTimer           Kind = 5  // timer stream: a durable timer waiting to be due
	KindExecution       Kind = 6  // record: an execution's state
	KindCheckpoint      Kind = 7  // record: one operation's checkpoint
	KindBatch           Kind = 8  // record: the coordinator's state of one Parallel or Map
	KindAbandon         Kind = 9  // core NATS notice: abandon the running branches of a completed batch
	KindCancelExecution Kind = 10 // event: a client asks for an execution to stop
	KindRollup          Kind = 11 // record: a part of a completed batch's outcome records, gathered by the coordinator
)

func (k Kind) String() string {
	switch k {
	case KindStartExecution:
		return "StartExecution"
	case KindInvocationEnded:
		return "InvocationEnded"
	case KindTimerFired:
		return "TimerFired"
	case KindRunTask:
		return "RunTask"
	case KindTimer:
		return "Timer"
	case KindExecution:
		return "Execution"
	case KindCheckpoint:
		return "Checkpoint"
	case KindBatch:
		return "Batch"
	case KindAbandon:
		return "Abandon"
	case KindCancelExecution:
		return "CancelExecution"
	case KindRollup:
		return "Rollup"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Errors returned by Decode.
var (
	ErrMalformed          = errors.New("messages: malformed message")
	ErrUnknownKind        = errors.New("messages: unknown message kind")
	ErrUnsupportedVersion = errors.New("messages: unsupported protocol version")
	ErrWrongKind          = errors.New("messages: unexpected message kind")
)

// Header is the start of every message.
type Header struct {
	Version uint8 `msgpack:"v"`
	Kind    Kind  `msgpack:"k"`
}

// Message is implemented by every wire type.
type Message interface {
	header() *Header
	kind() Kind
}

func (h *Header) header() *Header { return h }

// ErrorInfo is an error as it crosses the wire and is stored: its type name, its message, and
// optional data. It is how a failure seen on one machine is the same failure on another.
type ErrorInfo struct {
	Type    string `msgpack:"t"`
	Message string `msgpack:"m"`
	Data    []byte `msgpack:"d,omitempty"`
	// FromStep is set when the error is a step's failure passed on unchanged, so that a reader
	// rebuilds it as a step error again.
	FromStep bool `msgpack:"s,omitempty"`
}

// StartExecution asks for an execution of Function. ExecutionID is chosen by the client (a random
// id, or the caller's execution name), so starting twice with one name starts one execution.
type StartExecution struct {
	Header
	ExecutionID string `msgpack:"id"`
	Function    string `msgpack:"fn"`
	Input       []byte `msgpack:"in"` // msgpack encoding of the handler's input
	RequestedAt int64  `msgpack:"at"` // unix nanoseconds, client clock
	TraceParent string `msgpack:"tp,omitempty"`
	// Timeout, if set, ends the execution TIMED_OUT this long after RequestedAt (nanoseconds).
	Timeout int64 `msgpack:"to,omitempty"`
	// NewID says the client generated ExecutionID for this start (a random id, not a name):
	// no other start has it, so the coordinator that takes this event the first time creates
	// the execution without reading first. A client that sets it for an id used before may see
	// the execution's first task run twice.
	NewID bool `msgpack:"ni,omitempty"`
}

// CancelExecution asks for a running execution to stop: it ends CANCELLED, its running code is
// cancelled on every worker, and nothing more of it is dispatched.
type CancelExecution struct {
	Header
	ExecutionID string `msgpack:"id"`
	Reason      string `msgpack:"rs,omitempty"`
	RequestedAt int64  `msgpack:"at"`
}

// BranchRef names one branch: its Parallel (or Map) operation and its index there.
type BranchRef struct {
	OpID  string `msgpack:"op"`
	Index int    `msgpack:"i"`
}

// RunTask asks a worker to run, or replay, the handler of an execution — or, when Path is set,
// one branch: the worker replays the handler to Path[0]'s operation, runs branch Path[0].Index,
// inside it replays to Path[1]'s operation, and so on. TaskID names the dispatch (its cause); the
// InvocationEnded that answers carries it back.
type RunTask struct {
	Header
	ExecutionID string      `msgpack:"id"`
	Function    string      `msgpack:"fn"`
	TaskID      string      `msgpack:"t"`
	Path        []BranchRef `msgpack:"p,omitempty"`
	// Fresh marks a branch's first dispatch: it has no checkpoints yet, so a worker that knows the
	// branch list need not read anything before running it.
	Fresh bool `msgpack:"fr,omitempty"`
	// Input is the execution's input, carried when small so that the worker need not read the
	// execution record. Empty: read it.
	Input []byte `msgpack:"in,omitempty"`
	// Prior are records a replay to the branch's batch meets (ParallelRequest.Prior), carried in
	// a small batch's tasks so that a worker that does not know the batch yet reads nothing.
	Prior []Prior `msgpack:"pr,omitempty"`
}

// Outcome is how one invocation of a handler ended.
type Outcome uint8

const (
	OutcomeCompleted Outcome = 1 // the handler returned a result
	OutcomeFailed    Outcome = 2 // the handler returned an error, panicked, or replay diverged
	OutcomeSuspended Outcome = 3 // the handler waits for timers (or other work) and holds no worker
)

func (o Outcome) String() string {
	switch o {
	case OutcomeCompleted:
		return "COMPLETED"
	case OutcomeFailed:
		return "FAILED"
	case OutcomeSuspended:
		return "SUSPENDED"
	}
	return fmt.Sprintf("Outcome(%d)", uint8(o))
}

// TimerKind says what a durable timer is for.
type TimerKind uint8

const (
	TimerWait  TimerKind = 1 // a durable.Wait: when due, the wait's checkpoint succeeds
	TimerRetry TimerKind = 2 // a step's retry backoff: when due, the next attempt may run
	// TimerTimeout is the execution's timeout (OpID TimeoutTimerOp): when due, the execution ends
	// TIMED_OUT unless it has ended already.
	TimerTimeout TimerKind = 3
)

// TimeoutTimerOp is the OpID of an execution's timeout timer (no operation has this id).
const TimeoutTimerOp = "timeout"

// TimerRequest is a timer an invocation needs before it can go on. Path is the branch that waits
// (empty: the handler itself), which is what runs again when the timer is due.
type TimerRequest struct {
	OpID   string      `msgpack:"op"`
	FireAt int64       `msgpack:"at"` // unix nanoseconds
	Kind   TimerKind   `msgpack:"tk"`
	Path   []BranchRef `msgpack:"p,omitempty"`
	// ResumeTrace is the W3C traceparent under which the code that runs again when the timer is
	// due is traced (the parent of the span of the invocation that waited).
	ResumeTrace string `msgpack:"rt,omitempty"`
}

// BatchConfig is a Parallel's or Map's size, window and completion policy. Unset thresholds are
// nil; MaxConcurrency 0 is unlimited.
type BatchConfig struct {
	N                          int      `msgpack:"n"`
	MaxConcurrency             int      `msgpack:"mc,omitempty"`
	MinSuccessful              *int     `msgpack:"ms,omitempty"`
	ToleratedFailureCount      *int     `msgpack:"tc,omitempty"`
	ToleratedFailurePercentage *float64 `msgpack:"tp,omitempty"`
	// Inline marks a batch whose branches ran on the worker that opened it, inside its
	// invocation: their outcomes are InlineRecordID records, which no coordinator counts.
	Inline bool `msgpack:"il,omitempty"`
}

// ParallelRequest asks the coordinator to run the branches of a Parallel or Map. Path is the
// branch that called it (empty: the handler itself), which resumes when the batch completes.
type ParallelRequest struct {
	OpID string      `msgpack:"op"`
	Path []BranchRef `msgpack:"p,omitempty"`
	// Via are the branches of inline batches between the invocation that asks (Path) and the
	// batch: its branch tasks are addressed through them (Path, Via, then the branch), while
	// the batch's completion resumes Path, whose code runs those inline branches again.
	Via    []BranchRef `msgpack:"vi,omitempty"`
	Config BatchConfig `msgpack:"c"`
	Name   string      `msgpack:"n,omitempty"`
	// ResumeTrace is the W3C traceparent under which the code resumed by the batch's completion
	// is traced (the parent of the span of the invocation that opened it).
	ResumeTrace string `msgpack:"rt,omitempty"`
	// Checkpoint is the batch's record as opened (STARTED, with its config). With Revision 0 it is
	// not stored yet: the coordinator creates it (if absent) with the batch's state, before any
	// branch is dispatched. With a Revision it was stored by the opener, as earlier versions did.
	// Either way the coordinator completes it with a compare-and-set and no read. Optional.
	Checkpoint *Checkpoint `msgpack:"cp,omitempty"`
	Revision   uint64      `msgpack:"rv,omitempty"`
	// Prior are the records a replay to the batch meets (final ones, and the batch's own), when
	// few and small: a small batch's branch tasks carry them, so that a worker replays to the
	// batch without reading anything. Optional.
	Prior []Prior `msgpack:"pr,omitempty"`
}

// Prior is a stored record and its revision, carried so that a reader need not read it.
type Prior struct {
	Checkpoint *Checkpoint `msgpack:"c"`
	Revision   uint64      `msgpack:"r"`
}

// CompletionReason says why a batch completed.
type CompletionReason uint8

const (
	ReasonAllCompleted             CompletionReason = 1
	ReasonMinSuccessfulReached     CompletionReason = 2
	ReasonFailureToleranceExceeded CompletionReason = 3
)

func (r CompletionReason) String() string {
	switch r {
	case ReasonAllCompleted:
		return "ALL_COMPLETED"
	case ReasonMinSuccessfulReached:
		return "MIN_SUCCESSFUL_REACHED"
	case ReasonFailureToleranceExceeded:
		return "FAILURE_TOLERANCE_EXCEEDED"
	}
	return fmt.Sprintf("CompletionReason(%d)", uint8(r))
}

// BatchSummary is a completed batch as frozen by the coordinator: how many branches started
// (indices 0..Started-1), which finished and which of those failed. Branch i's status is SUCCEEDED
// if it is in Done and not in FailedBits, FAILED if in both, else STARTED (abandoned).
type BatchSummary struct {
	Reason     CompletionReason `msgpack:"rs"`
	Started    int              `msgpack:"sn"`
	Succeeded  int              `msgpack:"s"`
	Failed     int              `msgpack:"f"`
	Done       []byte           `msgpack:"d,omitempty"`  // bitmap, bit i = branch i finished
	FailedBits []byte           `msgpack:"fb,omitempty"` // bitmap, bit i = branch i failed
	// Rollup is how many Rollup records (RollupKey, 0..Rollup-1) hold the outcome records of
	// every finished branch, gathered by the coordinator as it folded them: a reader takes them
	// in a few reads instead of one per branch. 0: none; read the branch records.
	Rollup int `msgpack:"ru,omitempty"`
}

// Rollup is one part of a completed batch's branch outcome records (BatchSummary.Rollup),
// stored in BatchBucket under RollupKey. Entries holds Count entries, each the record's stream
// revision (uvarint), a length (uvarint) and the record as stored in CheckpointBucket with only
// the fields the batch's result is rebuilt from (AppendResultFields); see AppendRollupEntry
// and Each.
type Rollup struct {
	Header
	Count   int    `msgpack:"n"`
	Entries []byte `msgpack:"e"`
}

// AppendRollupEntry appends one outcome record and its revision to a Rollup's Entries.
func AppendRollupEntry(b []byte, rev uint64, record []byte) []byte {
	b = binary.AppendUvarint(b, rev)
	b = binary.AppendUvarint(b, uint64(len(record)))
	return append(b, record...)
}

// Each calls fn for every entry of r, in order; it stops at fn's first error, and reports
// ErrMalformed if the entries are cut short or are not Count.
func (r *Rollup) Each(fn func(rev uint64, record []byte) error) error {
	b, n := r.Entries, 0
	for len(b) > 0 {
		rev, k := binary.Uvarint(b)
		if k <= 0 {
			return fmt.Errorf("%w: rollup entry %d: bad revision", ErrMalformed, n)
		}
		b = b[k:]
		size, k := binary.Uvarint(b)
		if k <= 0 || size > uint64(len(b)-k) {
			return fmt.Errorf("%w: rollup entry %d: bad length", ErrMalformed, n)
		}
		b = b[k:]
		if err := fn(rev, b[:size:size]); err != nil {
			return err
		}
		b, n = b[size:], n+1
	}
	if n != r.Count {
		return fmt.Errorf("%w: rollup holds %d entries, says %d", ErrMalformed, n, r.Count)
	}
	return nil
}

// Batch is the coordinator's state of one Parallel or Map, stored in BatchBucket under
// "<execution>.<op>". Per-branch state is two bits; results live in the branch checkpoints.
type Batch struct {
	Header
	ExecutionID string           `msgpack:"id"`
	Function    string           `msgpack:"fn"`
	OpID        string           `msgpack:"op"`
	Path        []BranchRef      `msgpack:"p,omitempty"`
	Via         []BranchRef      `msgpack:"vi,omitempty"` // see ParallelRequest.Via
	Config      BatchConfig      `msgpack:"c"`
	Next        int              `msgpack:"nx"` // branches dispatched: 0..Next-1
	Succeeded   int              `msgpack:"s"`
	Failed      int              `msgpack:"f"`
	Done        []byte           `msgpack:"d,omitempty"`
	FailedBits  []byte           `msgpack:"fb,omitempty"`
	Completed   bool             `msgpack:"cp,omitempty"`
	Reason      CompletionReason `msgpack:"rs,omitempty"`
	TraceParent string           `msgpack:"tp,omitempty"` // the batch's span: the parent of its branches'
	ResumeTrace string           `msgpack:"rt,omitempty"` // see ParallelRequest.ResumeTrace
	// Record and RecordRev are the batch's checkpoint as opened (ParallelRequest.Checkpoint).
	Record    *Checkpoint `msgpack:"rc,omitempty"`
	RecordRev uint64      `msgpack:"rr,omitempty"`
	// Input is the execution's input when it is small, carried on to the task that resumes the
	// awaiting code, so that the worker reads no record.
	Input []byte  `msgpack:"in,omitempty"`
	Prior []Prior `msgpack:"pr,omitempty"` // see ParallelRequest.Prior
}

// Abandon tells workers, over core NATS, that a batch completed: branches of it still running
// are cancelled and their outcomes dropped. An empty OpID abandons the whole execution (it was
// cancelled or timed out): all its running code is cancelled and its queued tasks dropped. Best
// effort; see docs/DESIGN.md.
type Abandon struct {
	Header
	ExecutionID string      `msgpack:"id"`
	OpID        string      `msgpack:"op"`
	Path        []BranchRef `msgpack:"p,omitempty"`
}

// InvocationEnded reports how one invocation (the RunTask TaskID, of the branch at Path or of the
// handler) ended. A branch that finished reports through its checkpoint instead; a branch sends
// this only when it suspends, or fails the whole execution (a non-determinism).
type InvocationEnded struct {
	Header
	ExecutionID string            `msgpack:"id"`
	TaskID      string            `msgpack:"t"`
	Path        []BranchRef       `msgpack:"p,omitempty"`
	Outcome     Outcome           `msgpack:"o"`
	Result      []byte            `msgpack:"r,omitempty"`
	Error       *ErrorInfo        `msgpack:"e,omitempty"`
	Timers      []TimerRequest    `msgpack:"ts,omitempty"`
	Parallels   []ParallelRequest `msgpack:"ps,omitempty"`
	EndedAt     int64             `msgpack:"at"`
}

// Timer waits in the timer stream until FireAt, then becomes a TimerFired event.
type Timer struct {
	Header
	ExecutionID string       `msgpack:"id"`
	Timer       TimerRequest `msgpack:"tm"`
}

// TimerFired tells the coordinator that a timer is due.
type TimerFired struct {
	Header
	ExecutionID string       `msgpack:"id"`
	Timer       TimerRequest `msgpack:"tm"`
	FiredAt     int64        `msgpack:"at"`
}

// ExecutionStatus is the lifecycle state of an execution.
type ExecutionStatus uint8

const (
	ExecutionRunning   ExecutionStatus = 1
	ExecutionSucceeded ExecutionStatus = 2
	ExecutionFailed    ExecutionStatus = 3
	ExecutionCancelled ExecutionStatus = 4 // stopped by a CancelExecution
	ExecutionTimedOut  ExecutionStatus = 5 // stopped by its timeout
)

func (s ExecutionStatus) String() string {
	switch s {
	case ExecutionRunning:
		return "RUNNING"
	case ExecutionSucceeded:
		return "SUCCEEDED"
	case ExecutionFailed:
		return "FAILED"
	case ExecutionCancelled:
		return "CANCELLED"
	case ExecutionTimedOut:
		return "TIMED_OUT"
	}
	return fmt.Sprintf("ExecutionStatus(%d)", uint8(s))
}

// ParseExecutionStatus is the inverse of String.
func ParseExecutionStatus(s string) (ExecutionStatus, bool) {
	for st := ExecutionRunning; st <= ExecutionTimedOut; st++ {
		if st.String() == s {
			return st, true
		}
	}
	return 0, false
}

// Terminal reports whether the status is final.
func (s ExecutionStatus) Terminal() bool { return s >= ExecutionSucceeded && s <= ExecutionTimedOut }

// Stopped reports whether the execution was stopped from outside (cancelled or timed out).
func (s ExecutionStatus) Stopped() bool { return s == ExecutionCancelled || s == ExecutionTimedOut }

// TimerState is a timer the coordinator scheduled, and whether it fired.
type TimerState struct {
	TimerRequest `msgpack:"tr"`
	Fired        bool `msgpack:"fd,omitempty"`
}

// Execution is an execution's state, owned by the coordinator and stored in ExecutionBucket. Its
// readers are workers (for the input) and clients (for the result).
type Execution struct {
	Header
	ID        string          `msgpack:"id"`
	Function  string          `msgpack:"fn"`
	Input     []byte          `msgpack:"in"`
	Status    ExecutionStatus `msgpack:"st"`
	Result    []byte          `msgpack:"r,omitempty"`
	Error     *ErrorInfo      `msgpack:"e,omitempty"`
	Timers    []TimerState    `msgpack:"ts,omitempty"`
	CreatedAt int64           `msgpack:"ca"`
	EndedAt   int64           `msgpack:"ea,omitempty"`
	// Deadline is when the execution times out (unix nanoseconds; 0: never).
	Deadline int64 `msgpack:"dl,omitempty"`
	// TraceParent is the W3C trace context of the execution's span, carried on to its tasks.
	TraceParent string `msgpack:"tp,omitempty"`
}

// OpKind is the kind of a durable operation.
type OpKind uint8

const (
	OpStep  OpKind = 1
	OpWait  OpKind = 2
	OpChild OpKind = 3
	// OpParallel is a Parallel or Map; its checkpoint holds the config and, once complete, the
	// BatchSummary.
	OpParallel OpKind = 4
	// OpBranch is one branch's outcome, stored under "<execution>.<op>.<index>": at once the
	// branch's checkpoint and the event the coordinator counts.
	OpBranch OpKind = 5
)

func (k OpKind) String() string {
	switch k {
	case OpStep:
		return "STEP"
	case OpWait:
		return "WAIT"
	case OpChild:
		return "CONTEXT"
	case OpParallel:
		return "PARALLEL"
	case OpBranch:
		return "BRANCH"
	}
	return fmt.Sprintf("OpKind(%d)", uint8(k))
}

// OpStatus is the state of one operation's checkpoint.
type OpStatus uint8

const (
	OpStarted   OpStatus = 1 // running (a child context), or an at-most-once attempt begun
	OpPending   OpStatus = 2 // waiting for a timer: a Wait, or a retry's backoff
	OpSucceeded OpStatus = 3
	OpFailed    OpStatus = 4
)

func (s OpStatus) String() string {
	switch s {
	case OpStarted:
		return "STARTED"
	case OpPending:
		return "PENDING"
	case OpSucceeded:
		return "SUCCEEDED"
	case OpFailed:
		return "FAILED"
	}
	return fmt.Sprintf("OpStatus(%d)", uint8(s))
}

// Terminal reports whether the status is final.
func (s OpStatus) Terminal() bool { return s == OpSucceeded || s == OpFailed }

// Checkpoint is one operation's recorded state, stored in CheckpointBucket. Its first write is a
// create-if-absent and every later one a compare-and-set, so racing workers agree on one outcome.
type Checkpoint struct {
	Header
	OpID      string     `msgpack:"op"`
	OpKind    OpKind     `msgpack:"ok"`
	Name      string     `msgpack:"n,omitempty"`
	Status    OpStatus   `msgpack:"st"`
	Result    []byte     `msgpack:"r,omitempty"`
	Error     *ErrorInfo `msgpack:"e,omitempty"`
	Attempt   int        `msgpack:"a,omitempty"`  // attempts made (steps)
	FireAt    int64      `msgpack:"fa,omitempty"` // when the pending timer is due, unix ns
	Fired     bool       `msgpack:"fd,omitempty"` // the pending timer is due
	StartedAt int64      `msgpack:"sa,omitempty"`
	EndedAt   int64      `msgpack:"ea,omitempty"`
	// Parallel and Map: the config at the start, the summary once complete.
	Batch   *BatchConfig  `msgpack:"bc,omitempty"`
	Summary *BatchSummary `msgpack:"bs,omitempty"`
	IsMap   bool          `msgpack:"mp,omitempty"`
	Flat    bool          `msgpack:"fl,omitempty"`
	// Inner, on a branch outcome: the branch's own checkpoints that were written with it rather
	// than one by one (steps that succeeded at the first try), so that a branch costs one write.
	Inner []*Checkpoint `msgpack:"in,omitempty"`
}

func (*StartExecution) kind() Kind  { return KindStartExecution }
func (*InvocationEnded) kind() Kind { return KindInvocationEnded }
func (*TimerFired) kind() Kind      { return KindTimerFired }
func (*RunTask) kind() Kind         { return KindRunTask }
func (*Timer) kind() Kind           { return KindTimer }
func (*Execution) kind() Kind       { return KindExecution }
func (*Checkpoint) kind() Kind      { return KindCheckpoint }
func (*Batch) kind() Kind           { return KindBatch }
func (*Abandon) kind() Kind         { return KindAbandon }
func (*CancelExecution) kind() Kind { return KindCancelExecution }
func (*Rollup) kind() Kind          { return KindRollup }

// Encode stamps m with its kind and the protocol version and returns its msgpack encoding.
func Encode(m Message) ([]byte, error) {
	h := m.header()
	h.Version = ProtocolVersion
	h.Kind = m.kind()
	switch m := m.(type) {
	case *RunTask:
		return appendTask(make([]byte, 0, 64+len(m.ExecutionID)+len(m.Input)), m), nil
	case *Checkpoint:
		return appendCheckpoint(make([]byte, 0, 96+len(m.Result)), m), nil
	}
	b, err := msgpack.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("messages: encode %s: %w", h.Kind, err)
	}
	return b, nil
}

// MustEncode is Encode for values that cannot fail to encode (every type here).
func MustEncode(m Message) []byte {
	b, err := Encode(m)
	if err != nil {
		panic(err)
	}
	return b
}

// Decode decodes any message, switching on its kind.
func Decode(data []byte) (Message, error) {
	// The hand-written readers check every length they meet. msgpack/v5 does not: it allocates a
	// slice as long as the length a message claims, however short the message, so a hostile one
	// could take the process down. Before anything goes to it, every length is checked.
	h, ok := peekHeader(data)
	if !ok {
		// Not in the order this package writes (another encoder, say): read the header the long way.
		if err := CheckWellFormed(data); err != nil {
			return nil, err
		}
		if err := msgpack.Unmarshal(data, &h); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
	}
	if h.Version == 0 {
		return nil, fmt.Errorf("%w: no version", ErrMalformed)
	}
	if h.Version > ProtocolVersion {
		return nil, fmt.Errorf("%w: %d (this build speaks up to %d)", ErrUnsupportedVersion, h.Version, ProtocolVersion)
	}
	if m, ok := decodeFast(h.Kind, data); ok {
		return m, nil
	}
	if err := CheckWellFormed(data); err != nil {
		return nil, err
	}
	var m Message
	switch h.Kind {
	case KindStartExecution:
		m = new(StartExecution)
	case KindInvocationEnded:
		m = new(InvocationEnded)
	case KindTimerFired:
		m = new(TimerFired)
	case KindRunTask:
		m = new(RunTask)
	case KindTimer:
		m = new(Timer)
	case KindExecution:
		m = new(Execution)
	case KindCheckpoint:
		m = new(Checkpoint)
	case KindBatch:
		m = new(Batch)
	case KindAbandon:
		m = new(Abandon)
	case KindCancelExecution:
		m = new(CancelExecution)
	case KindRollup:
		m = new(Rollup)
	default:
		return nil, fmt.Errorf("%w: %d", ErrUnknownKind, uint8(h.Kind))
	}
	if err := msgpack.Unmarshal(data, m); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrMalformed, h.Kind, err)
	}
	return m, nil
}

// CheckWellFormed reports ErrMalformed unless data starts with one complete msgpack value whose
// every string, array and map fits in the bytes that follow its header. Run it before handing
// bytes from outside to msgpack.Unmarshal, which would otherwise allocate whatever length a
// message claims.
func CheckWellFormed(data []byte) error {
	r := &reader{b: data}
	if err := r.skip(); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return nil
}

// DecodeAs decodes data and checks that it is a T.
func DecodeAs[T Message](data []byte) (T, error) {
	var zero T
	m, err := Decode(data)
	if err != nil {
		return zero, err
	}
	t, ok := m.(T)
	if !ok {
		return zero, fmt.Errorf("%w: got %s, want %T", ErrWrongKind, m.kind(), zero)
	}
	return t, nil
}

// peekHeader reads the version and kind when they are the first two entries of the map, as Encode
// writes them, without walking the rest of the message.
func peekHeader(data []byte) (h Header, ok bool) {
	r := &reader{b: data}
	n, err := r.mapLen()
	if err != nil || n < 2 {
		return h, false
	}
	for range 2 {
		key, err := r.raw()
		if err != nil {
			return h, false
		}
		switch string(key) {
		case "v":
			if h.Version, err = r.uint8(); err != nil {
				return h, false
			}
		case "k":
			k, err := r.uint8()
			if err != nil {
				return h, false
			}
			h.Kind = Kind(k)
		default:
			return h, false
		}
	}
	return h, h.Version != 0 && h.Kind != 0
}
