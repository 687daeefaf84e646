package messages

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
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
		"start_execution":   &StartExecution{ExecutionID: "order-1", Function: "orders", Input: []byte{0xa3, 'a', 'b', 'c'}, RequestedAt: 1700000000000000000, TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
		"run_task":          &RunTask{ExecutionID: "order-1", Function: "orders", Seq: 3},
		"invocation_ended":  &InvocationEnded{ExecutionID: "order-1", Seq: 2, Outcome: OutcomeSuspended, Timers: []TimerRequest{{OpID: "3", FireAt: 1700000000500000000, Kind: TimerWait}}, EndedAt: 1700000000100000000},
		"invocation_failed": &InvocationEnded{ExecutionID: "order-1", Seq: 4, Outcome: OutcomeFailed, Error: info, EndedAt: 1700000000200000000},
		"timer":             &Timer{ExecutionID: "order-1", Timer: TimerRequest{OpID: "2-1", FireAt: 1700000001000000000, Kind: TimerRetry}},
		"timer_fired":       &TimerFired{ExecutionID: "order-1", Timer: TimerRequest{OpID: "2-1", FireAt: 1700000001000000000, Kind: TimerRetry}, FiredAt: 1700000001000100000},
		"execution":         &Execution{ID: "order-1", Function: "orders", Input: []byte{0xc0}, Status: ExecutionFailed, Error: info, RunSeq: 4, Timers: []TimerState{{TimerRequest: TimerRequest{OpID: "3", FireAt: 5, Kind: TimerWait}, FiredSeq: 3}}, CreatedAt: 1, EndedAt: 2},
		"checkpoint":        &Checkpoint{OpID: "2-1", OpKind: OpStep, Name: "charge", Status: OpPending, Error: info, Attempt: 2, FireAt: 1700000001000000000, StartedAt: 10, EndedAt: 11},
	}
}

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
	badField, _ := msgpack.Marshal(map[string]any{"v": ProtocolVersion, "k": uint8(KindRunTask), "sq": "not a number"})
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
	data := MustEncode(&RunTask{ExecutionID: "x", Function: "f", Seq: 1})
	_, err := DecodeAs[*Execution](data)
	require.ErrorIs(t, err, ErrWrongKind)
	task, err := DecodeAs[*RunTask](data)
	require.NoError(t, err)
	require.Equal(t, uint64(1), task.Seq)
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
