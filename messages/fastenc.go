package messages

import (
	"encoding/binary"
	"math"
)

// Hand-written encoders for the records written once per branch: a branch task (the coordinator
// writes one per branch) and a checkpoint (a branch's outcome record, and the steps inside it).
// The reflection-based encoder cost about 4 µs a record, with a dozen allocations. These write
// the very bytes msgpack.Marshal writes for the same value — the same map of fields in the same
// order, empty omitempty fields left out, the same integer widths — so a reader cannot tell them
// apart; TestFastEncodersWriteWhatMarshalWrites holds them to that.

func appendTask(b []byte, t *RunTask) []byte {
	n := 5
	if len(t.Path) > 0 {
		n++
	}
	if t.Fresh {
		n++
	}
	if len(t.Input) > 0 {
		n++
	}
	if len(t.Prior) > 0 {
		n++
	}
	b = appendMapLen(b, n)
	b = appendHeader(b, t.Header)
	b = appendStr(appendStr(b, "id"), t.ExecutionID)
	b = appendStr(appendStr(b, "fn"), t.Function)
	b = appendStr(appendStr(b, "t"), t.TaskID)
	if len(t.Path) > 0 {
		b = appendStr(b, "p")
		b = appendArrayLen(b, len(t.Path))
		for _, r := range t.Path {
			b = appendMapLen(b, 2)
			b = appendStr(appendStr(b, "op"), r.OpID)
			b = appendInt(appendStr(b, "i"), int64(r.Index))
		}
	}
	if t.Fresh {
		b = appendBool(appendStr(b, "fr"), true)
	}
	if len(t.Input) > 0 {
		b = appendBin(appendStr(b, "in"), t.Input)
	}
	if len(t.Prior) > 0 {
		b = appendArrayLen(appendStr(b, "pr"), len(t.Prior))
		for _, p := range t.Prior {
			b = appendMapLen(b, 2)
			b = appendCheckpoint(appendStr(b, "c"), p.Checkpoint)
			b = appendUint64(appendStr(b, "r"), p.Revision)
		}
	}
	return b
}

func appendCheckpoint(b []byte, c *Checkpoint) []byte {
	if c == nil {
		return append(b, 0xc0)
	}
	n := 5
	for _, set := range [...]bool{c.Name != "", len(c.Result) > 0, c.Error != nil, c.Attempt != 0, c.FireAt != 0,
		c.Fired, c.StartedAt != 0, c.EndedAt != 0, c.Batch != nil, c.Summary != nil, c.IsMap, c.Flat, len(c.Inner) > 0} {
		if set {
			n++
		}
	}
	b = appendMapLen(b, n)
	b = appendHeader(b, c.Header)
	b = appendStr(appendStr(b, "op"), c.OpID)
	b = appendUint8(appendStr(b, "ok"), uint8(c.OpKind))
	if c.Name != "" {
		b = appendStr(appendStr(b, "n"), c.Name)
	}
	b = appendUint8(appendStr(b, "st"), uint8(c.Status))
	if len(c.Result) > 0 {
		b = appendBin(appendStr(b, "r"), c.Result)
	}
	if e := c.Error; e != nil {
		b = appendStr(b, "e")
		m := 2
		if len(e.Data) > 0 {
			m++
		}
		if e.FromStep {
			m++
		}
		b = appendMapLen(b, m)
		b = appendStr(appendStr(b, "t"), e.Type)
		b = appendStr(appendStr(b, "m"), e.Message)
		if len(e.Data) > 0 {
			b = appendBin(appendStr(b, "d"), e.Data)
		}
		if e.FromStep {
			b = appendBool(appendStr(b, "s"), true)
		}
	}
	if c.Attempt != 0 {
		b = appendInt(appendStr(b, "a"), int64(c.Attempt))
	}
	if c.FireAt != 0 {
		b = appendInt64(appendStr(b, "fa"), c.FireAt)
	}
	if c.Fired {
		b = appendBool(appendStr(b, "fd"), true)
	}
	if c.StartedAt != 0 {
		b = appendInt64(appendStr(b, "sa"), c.StartedAt)
	}
	if c.EndedAt != 0 {
		b = appendInt64(appendStr(b, "ea"), c.EndedAt)
	}
	if c.Batch != nil {
		b = appendBatchConfig(appendStr(b, "bc"), c.Batch)
	}
	if c.Summary != nil {
		b = appendSummary(appendStr(b, "bs"), c.Summary)
	}
	if c.IsMap {
		b = appendBool(appendStr(b, "mp"), true)
	}
	if c.Flat {
		b = appendBool(appendStr(b, "fl"), true)
	}
	if len(c.Inner) > 0 {
		b = appendStr(b, "in")
		b = appendArrayLen(b, len(c.Inner))
		for _, in := range c.Inner {
			b = appendCheckpoint(b, in)
		}
	}
	return b
}

func appendBatchConfig(b []byte, c *BatchConfig) []byte {
	n := 1
	for _, set := range [...]bool{c.MaxConcurrency != 0, c.MinSuccessful != nil, c.ToleratedFailureCount != nil,
		c.ToleratedFailurePercentage != nil, c.Inline} {
		if set {
			n++
		}
	}
	b = appendMapLen(b, n)
	b = appendInt(appendStr(b, "n"), int64(c.N))
	if c.MaxConcurrency != 0 {
		b = appendInt(appendStr(b, "mc"), int64(c.MaxConcurrency))
	}
	if c.MinSuccessful != nil {
		b = appendInt(appendStr(b, "ms"), int64(*c.MinSuccessful))
	}
	if c.ToleratedFailureCount != nil {
		b = appendInt(appendStr(b, "tc"), int64(*c.ToleratedFailureCount))
	}
	if c.ToleratedFailurePercentage != nil {
		b = binary.BigEndian.AppendUint64(append(appendStr(b, "tp"), 0xcb), math.Float64bits(*c.ToleratedFailurePercentage))
	}
	if c.Inline {
		b = appendBool(appendStr(b, "il"), true)
	}
	return b
}

func appendSummary(b []byte, s *BatchSummary) []byte {
	n := 4
	if len(s.Done) > 0 {
		n++
	}
	if len(s.FailedBits) > 0 {
		n++
	}
	if s.Rollup != 0 {
		n++
	}
	b = appendMapLen(b, n)
	b = appendUint8(appendStr(b, "rs"), uint8(s.Reason))
	b = appendInt(appendStr(b, "sn"), int64(s.Started))
	b = appendInt(appendStr(b, "s"), int64(s.Succeeded))
	b = appendInt(appendStr(b, "f"), int64(s.Failed))
	if len(s.Done) > 0 {
		b = appendBin(appendStr(b, "d"), s.Done)
	}
	if len(s.FailedBits) > 0 {
		b = appendBin(appendStr(b, "fb"), s.FailedBits)
	}
	if s.Rollup != 0 {
		b = appendInt(appendStr(b, "ru"), int64(s.Rollup))
	}
	return b
}

func appendHeader(b []byte, h Header) []byte {
	b = appendUint8(appendStr(b, "v"), h.Version)
	return appendUint8(appendStr(b, "k"), uint8(h.Kind))
}

// The msgpack primitives, in the widths msgpack/v5 chooses without its compact-ints option:
// an int the narrowest that holds it, a uint8 and an int64 their full width.

func appendMapLen(b []byte, n int) []byte { return appendCount(b, n, 0x80, 0xde) }

func appendArrayLen(b []byte, n int) []byte { return appendCount(b, n, 0x90, 0xdc) }

// appendCount writes the header of a map (fix codes 0x8_, then 0xde, 0xdf) or of an array (0x9_,
// then 0xdc, 0xdd) of n entries.
func appendCount(b []byte, n int, fix, c16 byte) []byte {
	switch {
	case n < 16:
		return append(b, fix|byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, c16), uint16(n))
	default:
		return binary.BigEndian.AppendUint32(append(b, c16+1), uint32(n))
	}
}

func appendStr(b []byte, s string) []byte {
	switch n := len(s); {
	case n < 32:
		b = append(b, 0xa0|byte(n))
	case n <= math.MaxUint8:
		b = append(b, 0xd9, byte(n))
	case n <= math.MaxUint16:
		b = binary.BigEndian.AppendUint16(append(b, 0xda), uint16(n))
	default:
		b = binary.BigEndian.AppendUint32(append(b, 0xdb), uint32(n))
	}
	return append(b, s...)
}

func appendBin(b []byte, p []byte) []byte {
	switch n := len(p); {
	case n <= math.MaxUint8:
		b = append(b, 0xc4, byte(n))
	case n <= math.MaxUint16:
		b = binary.BigEndian.AppendUint16(append(b, 0xc5), uint16(n))
	default:
		b = binary.BigEndian.AppendUint32(append(b, 0xc6), uint32(n))
	}
	return append(b, p...)
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 0xc3)
	}
	return append(b, 0xc2)
}

func appendUint8(b []byte, v uint8) []byte { return append(b, 0xcc, v) }

func appendUint64(b []byte, v uint64) []byte {
	return binary.BigEndian.AppendUint64(append(b, 0xcf), v)
}

func appendInt64(b []byte, v int64) []byte {
	return binary.BigEndian.AppendUint64(append(b, 0xd3), uint64(v))
}

func appendInt(b []byte, v int64) []byte {
	if v >= 0 {
		switch u := uint64(v); {
		case u <= math.MaxInt8:
			return append(b, byte(u))
		case u <= math.MaxUint8:
			return append(b, 0xcc, byte(u))
		case u <= math.MaxUint16:
			return binary.BigEndian.AppendUint16(append(b, 0xcd), uint16(u))
		case u <= math.MaxUint32:
			return binary.BigEndian.AppendUint32(append(b, 0xce), uint32(u))
		default:
			return binary.BigEndian.AppendUint64(append(b, 0xcf), u)
		}
	}
	switch {
	case v >= -32:
		return append(b, byte(v))
	case v >= math.MinInt8:
		return append(b, 0xd0, byte(v))
	case v >= math.MinInt16:
		return binary.BigEndian.AppendUint16(append(b, 0xd1), uint16(v))
	case v >= math.MinInt32:
		return binary.BigEndian.AppendUint32(append(b, 0xd2), uint32(v))
	default:
		return binary.BigEndian.AppendUint64(append(b, 0xd3), uint64(v))
	}
}
