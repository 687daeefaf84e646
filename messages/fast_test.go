package messages

import (
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"
	"pgregory.net/rapid"
)

// The hand-written decoders read what the encoder writes, whatever the values.
func TestFastDecodersMatchTheEncoder(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		str := rapid.StringMatching(`[A-Za-z0-9_-]{0,20}`)
		task := &RunTask{ExecutionID: str.Draw(t, "id"), Function: str.Draw(t, "fn"), TaskID: str.Draw(t, "task"),
			Fresh: rapid.Bool().Draw(t, "fresh"), Input: rapid.SliceOfN(rapid.Byte(), 0, 40).Draw(t, "input")}
		for range rapid.IntRange(0, 3).Draw(t, "depth") {
			task.Path = append(task.Path, BranchRef{OpID: str.Draw(t, "op"), Index: rapid.IntRange(0, 1<<20).Draw(t, "i")})
		}
		if len(task.Input) == 0 {
			task.Input = nil
		}
		if rapid.Bool().Draw(t, "prior") {
			task.Prior = []Prior{{Checkpoint: &Checkpoint{OpID: "1", OpKind: OpParallel, Status: OpStarted, Batch: &BatchConfig{N: 3}}, Revision: 7}}
		}
		got, err := DecodeAs[*RunTask](MustEncode(task))
		require.NoError(t, err)
		require.Equal(t, task, got)

		cp := &Checkpoint{OpID: str.Draw(t, "cp"), OpKind: OpKind(rapid.IntRange(1, 5).Draw(t, "kind")),
			Status: OpStatus(rapid.IntRange(1, 4).Draw(t, "status")), Result: task.Input,
			Inner: []*Checkpoint{{OpID: "x", OpKind: OpStep, Status: OpSucceeded}}}
		head, err := PeekOutcome(MustEncode(cp))
		require.NoError(t, err)
		require.Equal(t, OutcomeHead{OpKind: cp.OpKind, Status: cp.Status}, head)
	})
}

func TestPeekOutcomeChecksTheHeader(t *testing.T) {
	_, err := PeekOutcome(MustEncode(&RunTask{}))
	require.ErrorIs(t, err, ErrWrongKind)
	_, err = PeekOutcome([]byte{0xc1})
	require.ErrorIs(t, err, ErrMalformed)
	future, err := msgpack.Marshal(map[string]any{"v": ProtocolVersion + 1, "k": uint8(KindCheckpoint), "st": 3})
	require.NoError(t, err)
	_, err = PeekOutcome(future)
	require.ErrorIs(t, err, ErrUnsupportedVersion)
}

func BenchmarkDecodeRunTask(b *testing.B) {
	data := MustEncode(&RunTask{ExecutionID: "order-1", Function: "orders", TaskID: "b.2.7", Fresh: true,
		Path: []BranchRef{{OpID: "2", Index: 7}}})
	for b.Loop() {
		if _, err := DecodeAs[*RunTask](data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPeekOutcome(b *testing.B) {
	data := MustEncode(&Checkpoint{OpID: "2.7.3", OpKind: OpBranch, Status: OpSucceeded, Result: make([]byte, 100),
		Inner: []*Checkpoint{{OpID: "2-8-1", OpKind: OpStep, Status: OpSucceeded, Result: make([]byte, 100)}}})
	for b.Loop() {
		if _, err := PeekOutcome(data); err != nil {
			b.Fatal(err)
		}
	}
}
