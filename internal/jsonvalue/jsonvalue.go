// Package jsonvalue converts values between JSON and the msgpack that handlers read and return:
// JSON integers become int64 (so that a handler taking an int gets one), and msgpack values
// become what encoding/json can write.
package jsonvalue

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// Parse decodes exactly one JSON value, integers as int64 and other numbers as float64.
func Parse(raw []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("more than one JSON value")
	}
	return numbers(v), nil
}

func numbers(v any) any {
	switch v := v.(type) {
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return i
		}
		f, _ := v.Float64()
		return f
	case map[string]any:
		for k, e := range v {
			v[k] = numbers(e)
		}
	case []any:
		for i, e := range v {
			v[i] = numbers(e)
		}
	}
	return v
}

// ToMsgpack converts one JSON value to its msgpack encoding (empty input: nil).
func ToMsgpack(raw []byte) ([]byte, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return msgpack.Marshal(nil)
	}
	v, err := Parse(raw)
	if err != nil {
		return nil, err
	}
	return msgpack.Marshal(v)
}

// FromMsgpack decodes a msgpack value into one encoding/json can write: maps with keys of any
// kind become maps with string keys. Empty input is nil.
func FromMsgpack(b []byte) (any, error) {
	if len(b) == 0 {
		return nil, nil
	}
	dec := msgpack.NewDecoder(bytes.NewReader(b))
	dec.SetMapDecoder(func(d *msgpack.Decoder) (any, error) { return d.DecodeUntypedMap() })
	v, err := dec.DecodeInterface()
	if err != nil {
		return nil, err
	}
	return jsonable(v), nil
}

func jsonable(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			v[k] = jsonable(e)
		}
		return v
	case map[any]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[fmt.Sprint(k)] = jsonable(e)
		}
		return m
	case []any:
		for i, e := range v {
			v[i] = jsonable(e)
		}
	}
	return v
}
