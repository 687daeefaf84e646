package messages

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// goldenCases are the messages whose encodings are kept under testdata/. Add a case for a new
// kind; never change an existing file except by a deliberate protocol version change.
func goldenCases() map[string]Message {
	info := &ErrorInfo{Type: "StepError", Message: "card declined", Data: []byte{1, 2}}
	return map[string]Message{
		"start_execution":      &StartExecution{ExecutionID: "order-1", Function: "orders", Input: []byte{0xa3, 'a', 'b', 'c'}, RequestedAt: 1700000000000000000, TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
		"run_task_input":       &RunTask{ExecutionID: "order-1", Function: "orders", TaskID: "start", Input: []byte{0xa2, 'h', 'i'}},
		"run_task":             &RunTask{ExecutionID: "order-1", Function: "orders", TaskID: "start"},
		"branch_task":          &RunTask{ExecutionID: "order-1", Function: "orders", TaskID: "b.2.7", Fresh: true, Path: []BranchRef{{OpID: "1", Index: 3}, {OpID: "1-4-2", Index: 7}}},
		"invocation_ended":     &InvocationEnded{ExecutionID: "order-1", TaskID: "t.3.1700000000500000000", Outcome: OutcomeSuspended, Timers: []TimerRequest{{OpID: "3", FireAt: 1700000000500000000, Kind: TimerWait}}, EndedAt: 1700000000100000000},
		"invocation_failed":    &InvocationEnded{ExecutionID: "order-1", TaskID: "start", Outcome: OutcomeFailed, Error: info, EndedAt: 1700000000200000000},
		"invocation_batch":     &InvocationEnded{ExecutionID: "order-1", TaskID: "b.1.3", Path: []BranchRef{{OpID: "1", Index: 3}}, Outcome: OutcomeSuspended, Parallels: []ParallelRequest{{OpID: "1-4-2", Path: []BranchRef{{OpID: "1", Index: 3}}, Config: BatchConfig{N: 10, MaxConcurrency: 2, MinSuccessful: ptr(3), ToleratedFailureCount: ptr(1), ToleratedFailurePercentage: ptr(12.5)}}}, EndedAt: 3},
		"batch":                &Batch{ExecutionID: "order-1", Function: "orders", OpID: "2", Config: BatchConfig{N: 12, MaxConcurrency: 4}, Next: 9, Succeeded: 4, Failed: 1, Done: []byte{0x1f}, FailedBits: []byte{0x04}, Completed: true, Reason: ReasonFailureToleranceExceeded},
		"abandon":              &Abandon{ExecutionID: "order-1", OpID: "2", Path: []BranchRef{{OpID: "1", Index: 0}}},
		"parallel_checkpoint":  &Checkpoint{OpID: "2", OpKind: OpParallel, Name: "fan-out", Status: OpSucceeded, Batch: &BatchConfig{N: 3}, IsMap: true, Flat: true, Summary: &BatchSummary{Reason: ReasonAllCompleted, Started: 3, Succeeded: 2, Failed: 1, Done: []byte{7}, FailedBits: []byte{2}}},
		"branch_checkpoint":    &Checkpoint{OpID: "2.1", OpKind: OpBranch, Name: "map-item-1", Status: OpFailed, Error: &ErrorInfo{Type: "x.E", Message: "m", FromStep: true}},
		"execution":            &Execution{ID: "order-1", Function: "orders", Input: []byte{0xc0}, Status: ExecutionFailed, Error: info, Timers: []TimerState{{TimerRequest: TimerRequest{OpID: "3", FireAt: 5, Kind: TimerWait, Path: []BranchRef{{OpID: "1", Index: 2}}}, Fired: true}}, CreatedAt: 1, EndedAt: 2},
		"timer":                &Timer{ExecutionID: "order-1", Timer: TimerRequest{OpID: "2-1", FireAt: 1700000001000000000, Kind: TimerRetry}},
		"timer_fired":          &TimerFired{ExecutionID: "order-1", Timer: TimerRequest{OpID: "2-1", FireAt: 1700000001000000000, Kind: TimerRetry}, FiredAt: 1700000001000100000},
		"cancel_execution":     &CancelExecution{ExecutionID: "order-1", Reason: "operator", RequestedAt: 1700000000000000000},
		"start_timeout":        &StartExecution{ExecutionID: "order-2", Function: "orders", Input: []byte{0xc0}, RequestedAt: 1700000000000000000, Timeout: 30_000_000_000},
		"execution_timed_out":  &Execution{ID: "order-2", Function: "orders", Input: []byte{0xc0}, Status: ExecutionTimedOut, Error: &ErrorInfo{Type: "TimedOut", Message: "m"}, CreatedAt: 1, EndedAt: 2, Deadline: 2, TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
		"rollup":               &Rollup{Count: 2, Entries: AppendRollupEntry(AppendRollupEntry(nil, 41, []byte{0x80}), 300, []byte{0x81, 0xa1, 'v', 1})},
		"rolled_up_checkpoint": &Checkpoint{OpID: "4", OpKind: OpParallel, Name: "fan-out", Status: OpSucceeded, Batch: &BatchConfig{N: 100}, Summary: &BatchSummary{Reason: ReasonAllCompleted, Started: 100, Succeeded: 100, Done: []byte{0xff}, Rollup: 2}},
		"checkpoint":           &Checkpoint{OpID: "2-1", OpKind: OpStep, Name: "charge", Status: OpPending, Error: info, Attempt: 2, FireAt: 1700000001000000000, StartedAt: 10, EndedAt: 11},
	}
}

func ptr[T any](v T) *T { return &v }

func TestGolden(t *testing.T) {
	for name, want := range goldenCases() {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join("testdata", name+".msgpack")
			if *update {
				require.NoError(t, os.WriteFile(path, MustEncode(want), 0o644))
			}
			data, err := os.ReadFile(path)
			require.NoError(t, err, "golden file missing: run go test ./messages -update once, and commit it")
			got, err := Decode(data)
			require.NoError(t, err)
			MustEncode(want) // stamps version and kind into want
			require.Equal(t, want, got)
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	future, _ := msgpack.Marshal(map[string]any{"v": ProtocolVersion + 1, "k": uint8(KindRunTask)})
	unknown, _ := msgpack.Marshal(map[string]any{"v": ProtocolVersion, "k": 200})
	noVersion, _ := msgpack.Marshal(map[string]any{"k": uint8(KindRunTask)})
	badField, _ := msgpack.Marshal(map[string]any{"v": ProtocolVersion, "k": uint8(KindRunTask), "fr": "not a bool"})
	for _, tc := range []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"garbage", []byte("hello, world"), ErrMalformed},
		{"json", []byte(`{"v":1,"k":4}`), ErrMalformed},
		{"future version", future, ErrUnsupportedVersion},
		{"unknown kind", unknown, ErrUnknownKind},
		{"no version", noVersion, ErrMalformed},
		{"bad field type", badField, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(tc.data)
			require.ErrorIs(t, err, tc.want)
		})
	}
}

func TestDecodeAsWrongKind(t *testing.T) {
	data := MustEncode(&RunTask{ExecutionID: "x", Function: "f", TaskID: "start"})
	_, err := DecodeAs[*Execution](data)
	require.ErrorIs(t, err, ErrWrongKind)
	task, err := DecodeAs[*RunTask](data)
	require.NoError(t, err)
	require.Equal(t, "start", task.TaskID)
}

func TestValidateNames(t *testing.T) {
	require.NoError(t, ValidateFunction("order-workflow_2"))
	for _, bad := range []string{"", "a.b", "a b", "a*", "a>", string(make([]byte, 129))} {
		require.Error(t, ValidateFunction(bad), "%q", bad)
		require.Error(t, ValidateExecutionID(bad), "%q", bad)
	}
}

func FuzzDecode(f *testing.F) {
	for _, m := range goldenCases() {
		f.Add(MustEncode(m))
	}
	f.Add([]byte{})
	f.Add([]byte{0x82, 0xa1, 'v', 0x01, 0xa1, 'k', 0x07})
	f.Fuzz(func(t *testing.T, data []byte) {
		// Whatever the hand-written decoders read, the generic decoder reads the same way.
		for _, k := range []Kind{KindRunTask, KindCheckpoint} {
			fast, ok := decodeFast(k, data)
			if !ok {
				continue
			}
			generic := map[Kind]Message{KindRunTask: new(RunTask), KindCheckpoint: new(Checkpoint)}[k]
			if err := msgpack.Unmarshal(data, generic); err != nil {
				t.Fatalf("the fast decoder read a %s the generic one refuses: %v", k, err)
			}
			if !reflect.DeepEqual(fast, generic) {
				t.Fatalf("%s read differently:\nfast    %+v\ngeneric %+v", k, fast, generic)
			}
		}
		m, err := Decode(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnknownKind) && !errors.Is(err, ErrUnsupportedVersion) {
				t.Fatalf("Decode error outside the documented set: %v", err)
			}
			return
		}
		// Whatever decodes must encode again.
		if _, err := Encode(m); err != nil {
			t.Fatalf("decoded %T does not re-encode: %v", m, err)
		}
	})
}

func BenchmarkEncodeDecode(b *testing.B) {
	task := &RunTask{ExecutionID: "IklKRew6h1TGPdqmnQJH66", Function: "check-services", TaskID: "b.1.7", Fresh: true,
		Path: []BranchRef{{OpID: "1", Index: 7}}}
	cp := &Checkpoint{OpID: "1.7.3", OpKind: OpBranch, Status: OpSucceeded, Result: []byte("0123456789abcdefghij"),
		Inner: []*Checkpoint{{OpID: "1-8-1", OpKind: OpStep, Name: "work", Status: OpSucceeded, Result: []byte("0123456789abcdefghij")}}}
	b.Run("RunTask", func(b *testing.B) {
		for b.Loop() {
			data := MustEncode(task)
			if _, err := DecodeAs[*RunTask](data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("BranchOutcome", func(b *testing.B) {
		for b.Loop() {
			data := MustEncode(cp)
			if _, err := DecodeAs[*Checkpoint](data); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// A message that claims more elements than it holds is refused before anything is allocated for
// them: msgpack/v5 alone would allocate the whole claimed length (here 4 billion branch refs).
func TestClaimedLengthsAreChecked(t *testing.T) {
	huge := []byte{0x83, 0xa1, 'v', 0x01, 0xa1, 'k', byte(KindRunTask), 0xa1, 'p', 0xdd, 0xff, 0xff, 0xff, 0xff}
	_, err := Decode(huge)
	require.ErrorIs(t, err, ErrMalformed)
	require.ErrorIs(t, CheckWellFormed(huge), ErrMalformed)
	require.NoError(t, CheckWellFormed(MustEncode(&RunTask{ExecutionID: "x", Path: []BranchRef{{OpID: "1", Index: 2}}})))
	// Nor is a message nested deeper than any record goes (a stack frame a level).
	deep := bytes.Repeat([]byte{0x91}, 1<<20)
	require.ErrorIs(t, CheckWellFormed(append(deep, 0xc0)), ErrMalformed)
	_, err = Decode(append(deep, 0xc0))
	require.ErrorIs(t, err, ErrMalformed)
}
