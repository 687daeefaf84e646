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
	n, err := r.mapLen()
	if err != nil {
		return err
	}
	var keys keySet
	for range max(n, 0) {
		key, err := r.raw()
		if err != nil {
			return err
		}
		if keys.repeated(key) {
			return errSlowPath
		}
		switch string(key) {
		case "v":
			t.Version, err = r.uint8()
		case "k":
			var k uint8
			k, err = r.uint8()
			t.Kind = Kind(k)
		case "id":
			t.ExecutionID, err = r.str()
		case "fn":
			t.Function, err = r.str()
		case "t":
			t.TaskID, err = r.str()
		case "p":
			t.Path, err = readPath(r)
		case "fr":
			t.Fresh, err = r.bool()
		case "in":
			t.Input, err = r.bytes()
		case "pr":
			t.Prior, err = readPrior(r)
		default:
			err = r.skip()
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func readPath(r *reader) ([]BranchRef, error) {
	n, err := r.arrayLen()
	if err != nil || n < 0 {
		return nil, err
	}
	path := make([]BranchRef, n)
	for i := range path {
		m, err := r.mapLen()
		if err != nil {
			return nil, err
		}
		var keys keySet
		for range max(m, 0) {
			key, err := r.raw()
			if err != nil {
				return nil, err
			}
			if keys.repeated(key) {
				return nil, errSlowPath
			}
			switch string(key) {
			case "op":
				path[i].OpID, err = r.str()
			case "i":
				var v int64
				v, err = r.int()
				path[i].Index = int(v)
			default:
				err = r.skip()
			}
			if err != nil {
				return nil, err
			}
		}
	}
	return path, nil
}

func readPrior(r *reader) ([]Prior, error) {
	n, err := r.arrayLen()
	if err != nil || n < 0 {
		return nil, err
	}
	prior := make([]Prior, n)
	for i := range prior {
		m, err := r.mapLen()
		if err != nil {
			return nil, err
		}
		var keys keySet
		for range max(m, 0) {
			key, err := r.raw()
			if err != nil {
				return nil, err
			}
			if keys.repeated(key) {
				return nil, errSlowPath
			}
			switch string(key) {
			case "c":
				prior[i].Checkpoint, err = readCheckpointPtr(r)
			case "r":
				var v int64
				v, err = r.int()
				prior[i].Revision = uint64(v)
			default:
				err = r.skip()
			}
			if err != nil {
				return nil, err
			}
		}
	}
	return prior, nil
}

// readCheckpointPtr reads a checkpoint, or nil.
func readCheckpointPtr(r *reader) (*Checkpoint, error) {
	if c, err := r.peek(); err != nil {
		return nil, err
	} else if c == 0xc0 {
		r.i++
		return nil, nil
	}
	c := new(Checkpoint)
	return c, c.read(r)
}

func readBatchConfig(r *reader) (*BatchConfig, error) {
	n, err := r.mapLen()
	if err != nil || n < 0 {
		return nil, err
	}
	var keys keySet
	c := new(BatchConfig)
	for range n {
		key, err := r.raw()
		if err != nil {
			return nil, err
		}
		if keys.repeated(key) {
			return nil, errSlowPath
		}
		var v int64
		switch string(key) {
		case "n":
			v, err = r.int()
			c.N = int(v)
		case "mc":
			v, err = r.int()
			c.MaxConcurrency = int(v)
		case "ms":
			c.MinSuccessful, err = r.intPtr()
		case "tc":
			c.ToleratedFailureCount, err = r.intPtr()
		case "tp":
			c.ToleratedFailurePercentage, err = r.float64Ptr()
		default:
			err = r.skip()
		}
		if err != nil {
			return nil, err
		}
	}
	return c, nil
}

func readSummary(r *reader) (*BatchSummary, error) {
	n, err := r.mapLen()
	if err != nil || n < 0 {
		return nil, err
	}
	var keys keySet
	s := new(BatchSummary)
	for range n {
		key, err := r.raw()
		if err != nil {
			return nil, err
		}
		if keys.repeated(key) {
			return nil, errSlowPath
		}
		var v int64
		var u uint8
		switch string(key) {
		case "rs":
			u, err = r.uint8()
			s.Reason = CompletionReason(u)
		case "sn":
			v, err = r.int()
			s.Started = int(v)
		case "s":
			v, err = r.int()
			s.Succeeded = int(v)
		case "f":
			v, err = r.int()
			s.Failed = int(v)
		case "d":
			s.Done, err = r.bytes()
		case "fb":
			s.FailedBits, err = r.bytes()
		default:
			err = r.skip()
		}
		if err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (c *Checkpoint) read(r *reader) error {
	n, err := r.mapLen()
	if err != nil {
		return err
	}
	var keys keySet
	for range max(n, 0) {
		key, err := r.raw()
		if err != nil {
			return err
		}
		if keys.repeated(key) {
			return errSlowPath
		}
		var u uint8
		var v int64
		switch string(key) {
		case "v":
			c.Version, err = r.uint8()
		case "k":
			u, err = r.uint8()
			c.Kind = Kind(u)
		case "op":
			c.OpID, err = r.str()
		case "ok":
			u, err = r.uint8()
			c.OpKind = OpKind(u)
		case "n":
			c.Name, err = r.str()
		case "st":
			u, err = r.uint8()
			c.Status = OpStatus(u)
		case "r":
			c.Result, err = r.bytes()
		case "e":
			c.Error, err = readError(r)
		case "a":
			v, err = r.int()
			c.Attempt = int(v)
		case "fa":
			c.FireAt, err = r.int()
		case "fd":
			c.Fired, err = r.bool()
		case "sa":
			c.StartedAt, err = r.int()
		case "ea":
			c.EndedAt, err = r.int()
		case "bc":
			c.Batch, err = readBatchConfig(r)
		case "bs":
			c.Summary, err = readSummary(r)
		case "mp":
			c.IsMap, err = r.bool()
		case "fl":
			c.Flat, err = r.bool()
		case "in":
			c.Inner, err = readInner(r)
		default:
			err = r.skip()
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func readError(r *reader) (*ErrorInfo, error) {
	n, err := r.mapLen()
	if err != nil || n < 0 {
		return nil, err
	}
	var keys keySet
	e := new(ErrorInfo)
	for range n {
		key, err := r.raw()
		if err != nil {
			return nil, err
		}
		if keys.repeated(key) {
			return nil, errSlowPath
		}
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
		if err != nil {
			return nil, err
		}
	}
	return e, nil
}

func readInner(r *reader) ([]*Checkpoint, error) {
	n, err := r.arrayLen()
	if err != nil || n < 0 {
		return nil, err
	}
	inner := make([]*Checkpoint, n)
	for i := range inner {
		if inner[i], err = readCheckpointPtr(r); err != nil {
			return nil, err
		}
	}
	return inner, nil
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
	r := &reader{b: data}
	n, err := r.mapLen()
	if err != nil {
		return h, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	var version, kind uint8
	for range max(n, 0) {
		key, err := r.raw()
		if err != nil {
			return h, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		var v uint8
		switch string(key) {
		case "v":
			version, err = r.uint8()
		case "k":
			kind, err = r.uint8()
		case "ok":
			v, err = r.uint8()
			h.OpKind = OpKind(v)
		case "st":
			v, err = r.uint8()
			h.Status = OpStatus(v)
		default:
			err = r.skip()
		}
		if err != nil {
			return h, fmt.Errorf("%w: %s: %v", ErrMalformed, key, err)
		}
	}
	switch {
	case version == 0:
		return h, fmt.Errorf("%w: no version", ErrMalformed)
	case version > ProtocolVersion:
		return h, fmt.Errorf("%w: %d (this build speaks up to %d)", ErrUnsupportedVersion, version, ProtocolVersion)
	case Kind(kind) != KindCheckpoint:
		return h, fmt.Errorf("%w: %s, want %s", ErrWrongKind, Kind(kind), KindCheckpoint)
	}
	return h, nil
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
