package messages

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"
	"pgregory.net/rapid"
)

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

// The hand-written encoders write exactly the bytes of the reflection-based encoder, and the
// hand-written decoders (and PeekOutcome) read them back, whatever the values.
func TestFastEncodersWriteWhatMarshalWrites(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		task := drawTask(t)
		task.Header = Header{Version: ProtocolVersion, Kind: KindRunTask}
		want, err := msgpack.Marshal(task) // the generic encoder: messages.Encode is the fast one
		require.NoError(t, err)
		require.Equal(t, want, MustEncode(task))
		_, fast := decodeFast(KindRunTask, want)
		require.True(t, fast, "the fast decoder reads every task the encoder writes")
		back, err := DecodeAs[*RunTask](want)
		require.NoError(t, err)
		require.Equal(t, task, back)

		cp := drawCheckpoint(t, 2)
		cp.Header = Header{Version: ProtocolVersion, Kind: KindCheckpoint}
		want, err = msgpack.Marshal(cp)
		require.NoError(t, err)
		require.Equal(t, want, MustEncode(cp))
		_, fast = decodeFast(KindCheckpoint, want)
		require.True(t, fast, "the fast decoder reads every checkpoint the encoder writes")
		backCp, err := DecodeAs[*Checkpoint](want)
		require.NoError(t, err)
		require.Equal(t, cp, backCp)
		head, err := PeekOutcome(want)
		require.NoError(t, err)
		require.Equal(t, OutcomeHead{OpKind: cp.OpKind, Status: cp.Status}, head)
	})
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
	for range rapid.IntRange(0, 3).Draw(t, "prior") {
		p := Prior{Revision: rapid.Uint64Range(0, 1<<62).Draw(t, "rev")}
		if rapid.Bool().Draw(t, "record") {
			p.Checkpoint = drawCheckpoint(t, 1)
		}
		task.Prior = append(task.Prior, p)
	}
	return task
}

func drawCheckpoint(t *rapid.T, depth int) *Checkpoint {
	str := rapid.StringMatching(`[A-Za-z0-9 _-]{0,300}`)
	i64 := rapid.OneOf(rapid.Just(int64(0)), rapid.Int64())
	small := rapid.IntRange(-1<<40, 1<<40)
	cp := &Checkpoint{OpID: str.Draw(t, "op"), OpKind: OpKind(rapid.Uint8().Draw(t, "kind")), Name: str.Draw(t, "name"),
		Status: OpStatus(rapid.Uint8().Draw(t, "status")), Result: drawBytes(t, "result"),
		Attempt: small.Draw(t, "attempt"), FireAt: i64.Draw(t, "fa"), Fired: rapid.Bool().Draw(t, "fd"),
		StartedAt: i64.Draw(t, "sa"), EndedAt: i64.Draw(t, "ea"), IsMap: rapid.Bool().Draw(t, "mp"), Flat: rapid.Bool().Draw(t, "fl")}
	if rapid.Bool().Draw(t, "error") {
		cp.Error = &ErrorInfo{Type: str.Draw(t, "et"), Message: str.Draw(t, "em"), Data: drawBytes(t, "ed"), FromStep: rapid.Bool().Draw(t, "es")}
	}
	if rapid.Bool().Draw(t, "batch") {
		cp.Batch = &BatchConfig{N: small.Draw(t, "n"), MaxConcurrency: small.Draw(t, "mc"), Inline: rapid.Bool().Draw(t, "il")}
		if rapid.Bool().Draw(t, "ms") {
			v := small.Draw(t, "msv")
			cp.Batch.MinSuccessful = &v
		}
		if rapid.Bool().Draw(t, "tc") {
			v := small.Draw(t, "tcv")
			cp.Batch.ToleratedFailureCount = &v
		}
		if rapid.Bool().Draw(t, "tp") {
			v := rapid.Float64().Draw(t, "tpv")
			cp.Batch.ToleratedFailurePercentage = &v
		}
	}
	if rapid.Bool().Draw(t, "summary") {
		cp.Summary = &BatchSummary{Reason: CompletionReason(rapid.Uint8().Draw(t, "reason")), Started: small.Draw(t, "sn"),
			Succeeded: small.Draw(t, "s"), Failed: small.Draw(t, "f"), Done: drawBytes(t, "d"), FailedBits: drawBytes(t, "fb"),
			Rollup: small.Draw(t, "ru")}
	}
	if depth > 0 {
		for range rapid.IntRange(0, 3).Draw(t, "inner") {
			if rapid.IntRange(0, 9).Draw(t, "nil") == 0 {
				cp.Inner = append(cp.Inner, nil)
			} else {
				cp.Inner = append(cp.Inner, drawCheckpoint(t, depth-1))
			}
		}
	}
	return cp
}

// A rollup keeps of each outcome record what a batch's result is rebuilt from, and reads back
// the same; a rollup cut short or miscounted is refused.
func TestRollupEntries(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		cp := drawCheckpoint(t, 2)
		data := MustEncode(cp)
		fields, err := AppendResultFields([]byte{0xff}, data)
		if err != nil {
			t.Fatal(err)
		}
		if fields[0] != 0xff {
			t.Fatal("AppendResultFields overwrote dst")
		}
		got, err := DecodeAs[*Checkpoint](fields[1:])
		if err != nil {
			t.Fatal(err)
		}
		// What the record decodes to, but for the fields a rollup leaves out.
		want, err := DecodeAs[*Checkpoint](data)
		if err != nil {
			t.Fatal(err)
		}
		want = &Checkpoint{Header: want.Header, OpID: want.OpID, OpKind: want.OpKind, Status: want.Status, Result: want.Result, Error: want.Error}
		if !reflect.DeepEqual(want, got) {
			t.Fatalf("kept %+v, want %+v", got, want)
		}
		rev := rapid.Uint64().Draw(t, "rev")
		r := &Rollup{Count: 2, Entries: AppendRollupEntry(AppendRollupEntry(nil, rev, fields[1:]), 7, data)}
		var revs []uint64
		var records [][]byte
		if err := r.Each(func(rev uint64, record []byte) error {
			revs, records = append(revs, rev), append(records, record)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(revs, []uint64{rev, 7}) || !bytes.Equal(records[0], fields[1:]) || !bytes.Equal(records[1], data) {
			t.Fatalf("read back %v %x", revs, records)
		}
		for _, bad := range []*Rollup{{Count: 3, Entries: r.Entries}, {Count: 2, Entries: r.Entries[:len(r.Entries)-1]}, {Count: 1, Entries: r.Entries}} {
			if err := bad.Each(func(uint64, []byte) error { return nil }); !errors.Is(err, ErrMalformed) {
				t.Fatalf("rollup of %d entries claiming %d: %v", len(bad.Entries), bad.Count, err)
			}
		}
	})
	if _, err := AppendResultFields(nil, []byte{0x92, 1, 2}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("an array taken for a record: %v", err)
	}
}
