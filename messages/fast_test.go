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

// The hand-written encoders write exactly the bytes of the reflection-based encoder.
func TestFastEncodersWriteWhatMarshalWrites(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		task := drawTask(t)
		task.Header = Header{Version: ProtocolVersion, Kind: KindRunTask}
		require.True(t, fastTask(task))
		want, err := msgpack.Marshal((*plainTask)(task))
		require.NoError(t, err)
		require.Equal(t, want, MustEncode(task))

		cp := drawCheckpoint(t, 2)
		cp.Header = Header{Version: ProtocolVersion, Kind: KindCheckpoint}
		require.True(t, fastCheckpoint(cp))
		want, err = msgpack.Marshal(plain(cp))
		require.NoError(t, err)
		require.Equal(t, want, MustEncode(cp))
		back, err := DecodeAs[*Checkpoint](MustEncode(cp))
		require.NoError(t, err)
		require.Equal(t, cp, back)

		// A batch's record goes the reflection way, and the hand-written decoder reads it back.
		cp.Batch = &BatchConfig{N: rapid.IntRange(0, 1<<20).Draw(t, "n"), MaxConcurrency: rapid.IntRange(0, 9).Draw(t, "mc")}
		if rapid.Bool().Draw(t, "summary") {
			cp.Summary = &BatchSummary{Reason: CompletionReason(rapid.Uint8().Draw(t, "reason")), Started: 3, Succeeded: 2, Failed: 1,
				Done: []byte{7}, FailedBits: []byte{4}}
		}
		require.False(t, fastCheckpoint(cp))
		back, err = DecodeAs[*Checkpoint](MustEncode(cp))
		require.NoError(t, err)
		require.Equal(t, cp, back)
	})
}

// plainTask and plainCheckpoint are the wire types without their hand-written codecs.
type (
	plainTask       RunTask
	plainCheckpoint struct {
		Header
		OpID      string             `msgpack:"op"`
		OpKind    OpKind             `msgpack:"ok"`
		Name      string             `msgpack:"n,omitempty"`
		Status    OpStatus           `msgpack:"st"`
		Result    []byte             `msgpack:"r,omitempty"`
		Error     *ErrorInfo         `msgpack:"e,omitempty"`
		Attempt   int                `msgpack:"a,omitempty"`
		FireAt    int64              `msgpack:"fa,omitempty"`
		Fired     bool               `msgpack:"fd,omitempty"`
		StartedAt int64              `msgpack:"sa,omitempty"`
		EndedAt   int64              `msgpack:"ea,omitempty"`
		Batch     *BatchConfig       `msgpack:"bc,omitempty"`
		Summary   *BatchSummary      `msgpack:"bs,omitempty"`
		IsMap     bool               `msgpack:"mp,omitempty"`
		Flat      bool               `msgpack:"fl,omitempty"`
		Inner     []*plainCheckpoint `msgpack:"in,omitempty"`
	}
)

func plain(c *Checkpoint) *plainCheckpoint {
	p := &plainCheckpoint{Header: c.Header, OpID: c.OpID, OpKind: c.OpKind, Name: c.Name, Status: c.Status, Result: c.Result,
		Error: c.Error, Attempt: c.Attempt, FireAt: c.FireAt, Fired: c.Fired, StartedAt: c.StartedAt, EndedAt: c.EndedAt,
		Batch: c.Batch, Summary: c.Summary, IsMap: c.IsMap, Flat: c.Flat}
	for _, in := range c.Inner {
		p.Inner = append(p.Inner, plain(in))
	}
	return p
}

func drawBytes(t *rapid.T, label string) []byte {
	b := rapid.SliceOfN(rapid.Byte(), 0, 300).Draw(t, label)
	if len(b) == 0 {
		return nil
	}
	return b
}

func drawTask(t *rapid.T) *RunTask {
	str := rapid.StringMatching(`[A-Za-z0-9_-]{0,140}`)
	task := &RunTask{ExecutionID: str.Draw(t, "id"), Function: str.Draw(t, "fn"), TaskID: str.Draw(t, "task"),
		Fresh: rapid.Bool().Draw(t, "fresh"), Input: drawBytes(t, "input")}
	for range rapid.IntRange(0, 3).Draw(t, "depth") {
		task.Path = append(task.Path, BranchRef{OpID: str.Draw(t, "op"), Index: rapid.IntRange(0, 1<<40).Draw(t, "i")})
	}
	return task
}

func drawCheckpoint(t *rapid.T, depth int) *Checkpoint {
	str := rapid.StringMatching(`[A-Za-z0-9 _-]{0,300}`)
	i64 := rapid.OneOf(rapid.Just(int64(0)), rapid.Int64())
	cp := &Checkpoint{OpID: str.Draw(t, "op"), OpKind: OpKind(rapid.Uint8().Draw(t, "kind")), Name: str.Draw(t, "name"),
		Status: OpStatus(rapid.Uint8().Draw(t, "status")), Result: drawBytes(t, "result"),
		Attempt: rapid.IntRange(-1<<40, 1<<40).Draw(t, "attempt"), FireAt: i64.Draw(t, "fa"), Fired: rapid.Bool().Draw(t, "fd"),
		StartedAt: i64.Draw(t, "sa"), EndedAt: i64.Draw(t, "ea"), IsMap: rapid.Bool().Draw(t, "mp"), Flat: rapid.Bool().Draw(t, "fl")}
	if rapid.Bool().Draw(t, "error") {
		cp.Error = &ErrorInfo{Type: str.Draw(t, "et"), Message: str.Draw(t, "em"), Data: drawBytes(t, "ed"), FromStep: rapid.Bool().Draw(t, "es")}
	}
	if depth > 0 {
		for range rapid.IntRange(0, 3).Draw(t, "inner") {
			cp.Inner = append(cp.Inner, drawCheckpoint(t, depth-1))
		}
	}
	return cp
}
