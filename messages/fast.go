package messages

import (
	"bytes"
	"fmt"
)

// Hand-written decoders for the messages read once per branch: a task (a worker reads one per
// branch), a checkpoint (a branch's outcome, and what a replay reads), and the head of a branch
// outcome (the coordinator reads one per branch). The reflection-based decoder cost about 3 µs a
// task, a tenth of a branch's CPU. They read exactly what the generic decoder reads and skip keys
// they do not know; anything else — a field they leave to the generic decoder, a value of an
// unexpected type — sends the whole message the generic way, so that an odd message is read, or
// refused, exactly as before. The golden files, the property tests and the fuzz target hold them
// to that.

// decodeFast decodes a task or a checkpoint with the hand-written decoders; ok is false when the
// message must go the generic way.
func decodeFast(kind Kind, data []byte) (m Message, ok bool) {
	r := &reader{b: data}
	var err error
	switch kind {
	case KindRunTask:
		t := new(RunTask)
		err, m = t.read(r), t
	case KindCheckpoint:
		c := new(Checkpoint)
		err, m = c.read(r), c
	default:
		return nil, false
	}
	return m, err == nil && r.i == len(data)
}

func (t *RunTask) read(r *reader) error {
	_, err := r.readMap(func(key []byte) (err error) {
		switch string(key) {
		case "v":
			t.Version, err = r.uint8()
		case "k":
			err = setU8(r, &t.Kind)
		case "id":
			t.ExecutionID, err = r.str()
		case "fn":
			t.Function, err = r.str()
		case "t":
			t.TaskID, err = r.str()
		case "p":
			t.Path, err = readArray(r, func(ref *BranchRef) error { return ref.read(r) })
		case "fr":
			t.Fresh, err = r.bool()
		case "in":
			t.Input, err = r.bytes()
		case "pr":
			t.Prior, err = readArray(r, func(p *Prior) error { return p.read(r) })
		default:
			err = r.skip()
		}
		return err
	})
	return err
}

func (b *BranchRef) read(r *reader) error {
	_, err := r.readMap(func(key []byte) (err error) {
		switch string(key) {
		case "op":
			b.OpID, err = r.str()
		case "i":
			err = setInt(r, &b.Index)
		default:
			err = r.skip()
		}
		return err
	})
	return err
}

func (p *Prior) read(r *reader) error {
	_, err := r.readMap(func(key []byte) (err error) {
		switch string(key) {
		case "c":
			p.Checkpoint, err = readCheckpoint(r)
		case "r":
			err = setInt(r, &p.Revision)
		default:
			err = r.skip()
		}
		return err
	})
	return err
}

// readCheckpoint reads a checkpoint, or nil. Checkpoints nest (the records inside a branch's
// outcome, the records a task carries): the nesting is bounded as skip bounds it.
func readCheckpoint(r *reader) (*Checkpoint, error) {
	if c, err := r.peek(); err != nil || c == 0xc0 {
		if err == nil {
			r.i++
		}
		return nil, err
	}
	if r.depth >= maxDepth {
		return nil, errDepth
	}
	r.depth++
	defer func() { r.depth-- }()
	c := new(Checkpoint)
	return c, c.read(r)
}

func (c *Checkpoint) read(r *reader) error {
	_, err := r.readMap(func(key []byte) (err error) {
		switch string(key) {
		case "v":
			c.Version, err = r.uint8()
		case "k":
			err = setU8(r, &c.Kind)
		case "op":
			c.OpID, err = r.str()
		case "ok":
			err = setU8(r, &c.OpKind)
		case "n":
			c.Name, err = r.str()
		case "st":
			err = setU8(r, &c.Status)
		case "r":
			c.Result, err = r.bytes()
		case "e":
			c.Error, err = readStruct(r, (*ErrorInfo).read)
		case "a":
			err = setInt(r, &c.Attempt)
		case "fa":
			c.FireAt, err = r.int()
		case "fd":
			c.Fired, err = r.bool()
		case "sa":
			c.StartedAt, err = r.int()
		case "ea":
			c.EndedAt, err = r.int()
		case "bc":
			c.Batch, err = readStruct(r, (*BatchConfig).read)
		case "bs":
			c.Summary, err = readStruct(r, (*BatchSummary).read)
		case "mp":
			c.IsMap, err = r.bool()
		case "fl":
			c.Flat, err = r.bool()
		case "in":
			c.Inner, err = readArray(r, func(in **Checkpoint) (err error) { *in, err = readCheckpoint(r); return err })
		default:
			err = r.skip()
		}
		return err
	})
	return err
}

func (e *ErrorInfo) read(r *reader, key []byte) (err error) {
	switch string(key) {
	case "t":
		e.Type, err = r.str()
	case "m":
		e.Message, err = r.str()
	case "d":
		e.Data, err = r.bytes()
	case "s":
		e.FromStep, err = r.bool()
	default:
		err = r.skip()
	}
	return err
}

func (c *BatchConfig) read(r *reader, key []byte) (err error) {
	switch string(key) {
	case "n":
		err = setInt(r, &c.N)
	case "mc":
		err = setInt(r, &c.MaxConcurrency)
	case "ms":
		c.MinSuccessful, err = r.intPtr()
	case "tc":
		c.ToleratedFailureCount, err = r.intPtr()
	case "tp":
		c.ToleratedFailurePercentage, err = r.float64Ptr()
	case "il":
		c.Inline, err = r.bool()
	default:
		err = r.skip()
	}
	return err
}

func (s *BatchSummary) read(r *reader, key []byte) (err error) {
	switch string(key) {
	case "rs":
		err = setU8(r, &s.Reason)
	case "sn":
		err = setInt(r, &s.Started)
	case "s":
		err = setInt(r, &s.Succeeded)
	case "f":
		err = setInt(r, &s.Failed)
	case "d":
		s.Done, err = r.bytes()
	case "fb":
		s.FailedBits, err = r.bytes()
	case "ru":
		err = setInt(r, &s.Rollup)
	default:
		err = r.skip()
	}
	return err
}

// readStruct reads a map into a new T, field by field; nil for nil.
func readStruct[T any](r *reader, field func(*T, *reader, []byte) error) (*T, error) {
	v := new(T)
	present, err := r.readMap(func(key []byte) error { return field(v, r, key) })
	if !present || err != nil {
		return nil, err
	}
	return v, nil
}

// readArray reads an array, each element with elem; nil for nil.
func readArray[T any](r *reader, elem func(*T) error) ([]T, error) {
	n, err := r.arrayLen()
	if err != nil || n < 0 {
		return nil, err
	}
	out := make([]T, n)
	for i := range out {
		if err := elem(&out[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// setU8 and setInt read a value into a field of a uint8 or an integer type.
func setU8[T ~uint8](r *reader, v *T) error {
	u, err := r.uint8()
	*v = T(u)
	return err
}

func setInt[T ~int | ~int64 | ~uint64](r *reader, v *T) error {
	i, err := r.int()
	*v = T(i)
	return err
}

// OutcomeHead is what the coordinator needs of a branch outcome record.
type OutcomeHead struct {
	OpKind OpKind
	Status OpStatus
}

// PeekOutcome reads the kind and status of a Checkpoint without decoding the rest (its result
// and the records inside), checking its header as Decode does.
func PeekOutcome(data []byte) (OutcomeHead, error) {
	var h OutcomeHead
	var version uint8
	var kind Kind
	r := &reader{b: data}
	_, err := r.eachKey(func(key []byte) (err error) {
		switch string(key) {
		case "v":
			version, err = r.uint8()
		case "k":
			err = setU8(r, &kind)
		case "ok":
			err = setU8(r, &h.OpKind)
		case "st":
			err = setU8(r, &h.Status)
		default:
			err = r.skip()
		}
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		return nil
	})
	switch {
	case err != nil:
		return h, fmt.Errorf("%w: %v", ErrMalformed, err)
	case version == 0:
		return h, fmt.Errorf("%w: no version", ErrMalformed)
	case version > ProtocolVersion:
		return h, fmt.Errorf("%w: %d (this build speaks up to %d)", ErrUnsupportedVersion, version, ProtocolVersion)
	case kind != KindCheckpoint:
		return h, fmt.Errorf("%w: %s, want %s", ErrWrongKind, kind, KindCheckpoint)
	}
	return h, nil
}

// eachKey reads a map, handing each key to field, which reads its value; present is false for
// nil.
func (r *reader) eachKey(field func(key []byte) error) (present bool, err error) {
	n, err := r.mapLen()
	if err != nil || n < 0 {
		return false, err
	}
	for range n {
		key, err := r.raw()
		if err != nil {
			return true, err
		}
		if err := field(key); err != nil {
			return true, err
		}
	}
	return true, nil
}

// readMap is eachKey for a record: a key that comes twice sends the message the generic way.
func (r *reader) readMap(field func(key []byte) error) (present bool, err error) {
	var keys keySet
	return r.eachKey(func(key []byte) error {
		if keys.repeated(key) {
			return errSlowPath
		}
		return field(key)
	})
}

// keySet notices a key that comes twice in one map. The generic decoder decodes the second value
// into what the first left (the same slice, the same struct), which the fast decoders do not
// copy: such a message goes the generic way. So does a map of more keys than any record has.
type keySet struct {
	n    int
	seen [24][]byte
}

func (s *keySet) repeated(key []byte) bool {
	for _, k := range s.seen[:s.n] {
		if bytes.Equal(k, key) {
			return true
		}
	}
	if s.n == len(s.seen) {
		return true
	}
	s.seen[s.n] = key
	s.n++
	return false
}

// AppendResultFields appends to dst the branch outcome record data with only the fields a
// batch's result is rebuilt from: the header, the operation id and kind, the status, the result
// and the error. It is what a Rollup keeps of each record (a branch's first-try steps, its name
// and its times can be a good half of the record).
func AppendResultFields(dst, data []byte) ([]byte, error) {
	r := &reader{b: data}
	n, err := r.mapLen()
	if err != nil || n < 0 {
		return dst, fmt.Errorf("%w: not a record", ErrMalformed)
	}
	type span struct{ from, to int }
	var keep [8]span
	k := 0
	for range n {
		from := r.i
		key, err := r.raw()
		if err == nil {
			err = r.skip()
		}
		if err != nil {
			return dst, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		switch string(key) {
		case "v", "k", "op", "ok", "st", "r", "e":
			if k == len(keep) {
				return dst, fmt.Errorf("%w: a key repeated", ErrMalformed)
			}
			keep[k] = span{from, r.i}
			k++
		}
	}
	dst = appendMapLen(dst, k)
	for _, s := range keep[:k] {
		dst = append(dst, data[s.from:s.to]...)
	}
	return dst, nil
}
