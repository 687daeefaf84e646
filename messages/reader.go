package messages

import (
	"encoding/binary"
	"errors"
	"math"
)

// reader reads msgpack straight from a byte slice, for the hand-written decoders: the
// msgpack.Decoder reads through an io.Reader a byte at a time, which cost more than the rest of
// decoding a task. Every method reports errShort or errType rather than reading past the end.
type reader struct {
	b     []byte
	i     int
	depth int // of the maps and arrays skip is inside
}

// maxDepth bounds the nesting skip follows: each level is a frame of the goroutine's stack.
const maxDepth = 10_000

var (
	errShort = errors.New("msgpack: unexpected end of data")
	errType  = errors.New("msgpack: unexpected type")
	errDepth = errors.New("msgpack: nested too deep")
	// errSlowPath: the value holds a field the fast decoder leaves to the reflection-based one.
	errSlowPath = errors.New("msgpack: not for the fast path")
)

func (r *reader) peek() (byte, error) {
	if r.i >= len(r.b) {
		return 0, errShort
	}
	return r.b[r.i], nil
}

func (r *reader) take(n int) ([]byte, error) {
	if n < 0 || len(r.b)-r.i < n {
		return nil, errShort
	}
	p := r.b[r.i : r.i+n]
	r.i += n
	return p, nil
}

func (r *reader) code() (byte, error) {
	c, err := r.peek()
	if err == nil {
		r.i++
	}
	return c, err
}

// length reads a big-endian length of n bytes.
func (r *reader) length(n int) (int, error) {
	p, err := r.take(n)
	if err != nil {
		return 0, err
	}
	switch n {
	case 1:
		return int(p[0]), nil
	case 2:
		return int(binary.BigEndian.Uint16(p)), nil
	default:
		return int(binary.BigEndian.Uint32(p)), nil
	}
}

// mapLen reads a map header: how many entries, or -1 for nil.
func (r *reader) mapLen() (int, error) { return r.count(0x80, 0xde) }

// arrayLen reads an array header: how many elements, or -1 for nil.
func (r *reader) arrayLen() (int, error) { return r.count(0x90, 0xdc) }

// count reads the header of a map (fix codes 0x8_, then 0xde, 0xdf) or of an array (0x9_, then
// 0xdc, 0xdd). A count the rest of the data cannot hold (each entry takes a byte at least) is
// refused before anything is allocated for it.
func (r *reader) count(fix, c16 byte) (int, error) {
	c, err := r.code()
	n := 0
	switch {
	case err != nil:
		return 0, err
	case c&0xf0 == fix:
		n = int(c & 0x0f)
	case c == c16:
		n, err = r.length(2)
	case c == c16+1:
		n, err = r.length(4)
	case c == 0xc0:
		return -1, nil
	default:
		return 0, errType
	}
	if err == nil && n > len(r.b)-r.i {
		return 0, errShort
	}
	return n, err
}

// raw reads a string or binary value as bytes (nil for nil), not copied.
func (r *reader) raw() ([]byte, error) {
	c, err := r.code()
	if err != nil {
		return nil, err
	}
	var n int
	switch {
	case c >= 0xa0 && c <= 0xbf:
		n = int(c & 0x1f)
	case c == 0xd9 || c == 0xc4:
		n, err = r.length(1)
	case c == 0xda || c == 0xc5:
		n, err = r.length(2)
	case c == 0xdb || c == 0xc6:
		n, err = r.length(4)
	case c == 0xc0:
		return nil, nil
	default:
		return nil, errType
	}
	if err != nil {
		return nil, err
	}
	return r.take(n)
}

func (r *reader) str() (string, error) {
	p, err := r.raw()
	return string(p), err
}

// bytes reads a binary (or string) value into a new slice; nil for nil or empty, as msgpack's
// decoder leaves an omitted field.
func (r *reader) bytes() ([]byte, error) {
	p, err := r.raw()
	if err != nil || p == nil {
		return nil, err
	}
	return append([]byte{}, p...), nil
}

func (r *reader) bool() (bool, error) {
	c, err := r.code()
	switch {
	case err != nil:
		return false, err
	case c == 0xc3:
		return true, nil
	case c == 0xc2 || c == 0xc0:
		return false, nil
	}
	return false, errType
}

// int reads any msgpack integer (nil reads as 0).
func (r *reader) int() (int64, error) {
	c, err := r.code()
	if err != nil {
		return 0, err
	}
	switch {
	case c <= 0x7f:
		return int64(c), nil
	case c >= 0xe0:
		return int64(int8(c)), nil
	case c == 0xc0:
		return 0, nil
	}
	var p []byte
	switch c {
	case 0xcc, 0xd0:
		p, err = r.take(1)
	case 0xcd, 0xd1:
		p, err = r.take(2)
	case 0xce, 0xd2:
		p, err = r.take(4)
	case 0xcf, 0xd3:
		p, err = r.take(8)
	default:
		return 0, errType
	}
	if err != nil {
		return 0, err
	}
	switch c {
	case 0xcc:
		return int64(p[0]), nil
	case 0xd0:
		return int64(int8(p[0])), nil
	case 0xcd:
		return int64(binary.BigEndian.Uint16(p)), nil
	case 0xd1:
		return int64(int16(binary.BigEndian.Uint16(p))), nil
	case 0xce:
		return int64(binary.BigEndian.Uint32(p)), nil
	case 0xd2:
		return int64(int32(binary.BigEndian.Uint32(p))), nil
	case 0xcf:
		u := binary.BigEndian.Uint64(p)
		if u > math.MaxInt64 {
			return 0, errType
		}
		return int64(u), nil
	default:
		return int64(binary.BigEndian.Uint64(p)), nil
	}
}

// intPtr reads an integer, or nil.
func (r *reader) intPtr() (*int, error) {
	if c, err := r.peek(); err != nil || c == 0xc0 {
		if err == nil {
			r.i++
		}
		return nil, err
	}
	v, err := r.int()
	n := int(v)
	return &n, err
}

// float64Ptr reads a float64, or nil. Only a float64 is read here; anything else goes the
// generic way.
func (r *reader) float64Ptr() (*float64, error) {
	c, err := r.code()
	switch {
	case err != nil:
		return nil, err
	case c == 0xc0:
		return nil, nil
	case c != 0xcb:
		return nil, errSlowPath
	}
	p, err := r.take(8)
	if err != nil {
		return nil, err
	}
	f := math.Float64frombits(binary.BigEndian.Uint64(p))
	return &f, nil
}

func (r *reader) uint8() (uint8, error) {
	v, err := r.int()
	if err == nil && (v < 0 || v > math.MaxUint8) {
		return 0, errType
	}
	return uint8(v), err
}

// skip reads past one value of any type.
func (r *reader) skip() error {
	c, err := r.peek()
	if err != nil {
		return err
	}
	fixed := func(n int) error { _, err := r.take(n); return err }
	switch {
	case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3:
		return fixed(1)
	case c >= 0xa0 && c <= 0xbf, c == 0xd9, c == 0xda, c == 0xdb, c == 0xc4, c == 0xc5, c == 0xc6:
		_, err := r.raw()
		return err
	case c >= 0x80 && c <= 0x9f, c == 0xdc, c == 0xdd, c == 0xde, c == 0xdf:
		return r.skipContainer(c)
	}
	r.i++
	switch c {
	case 0xcc, 0xd0:
		return fixed(1)
	case 0xcd, 0xd1:
		return fixed(2)
	case 0xce, 0xd2, 0xca:
		return fixed(4)
	case 0xcf, 0xd3, 0xcb:
		return fixed(8)
	case 0xd4:
		return fixed(2)
	case 0xd5:
		return fixed(3)
	case 0xd6:
		return fixed(5)
	case 0xd7:
		return fixed(9)
	case 0xd8:
		return fixed(17)
	case 0xc7, 0xc8, 0xc9: // ext 8, 16, 32: length, type, data
		width := 1 << (c - 0xc7) // 1, 2, 4
		n, err := r.length(width)
		if err != nil {
			return err
		}
		return fixed(n + 1)
	}
	return errType
}

// skipContainer reads past a map or an array and everything in it.
func (r *reader) skipContainer(c byte) error {
	if r.depth >= maxDepth {
		return errDepth
	}
	r.depth++
	defer func() { r.depth-- }()
	var n int
	var err error
	if c <= 0x8f || c == 0xde || c == 0xdf {
		n, err = r.mapLen()
		n *= 2 // keys and values
	} else {
		n, err = r.arrayLen()
	}
	for range max(n, 0) {
		if err != nil {
			break
		}
		err = r.skip()
	}
	return err
}
