package jsonvalue

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"
)

func TestParseKeepsIntegers(t *testing.T) {
	v, err := Parse([]byte(`{"n": 3, "f": 1.5, "l": [1, "x"]}`))
	require.NoError(t, err)
	require.Equal(t, map[string]any{"n": int64(3), "f": 1.5, "l": []any{int64(1), "x"}}, v)
	_, err = Parse([]byte(`{} {}`))
	require.Error(t, err)
	_, err = Parse([]byte(`{bad`))
	require.Error(t, err)
}

func TestRoundTrip(t *testing.T) {
	mp, err := ToMsgpack([]byte(`{"order":"A-1","qty":2,"tags":["x"],"ok":true,"none":null}`))
	require.NoError(t, err)
	var typed struct {
		Order string   `msgpack:"order"`
		Qty   int      `msgpack:"qty"`
		Tags  []string `msgpack:"tags"`
	}
	require.NoError(t, msgpack.Unmarshal(mp, &typed), "a handler's typed input decodes")
	require.Equal(t, 2, typed.Qty)

	back, err := FromMsgpack(mp)
	require.NoError(t, err)
	j, err := json.Marshal(back)
	require.NoError(t, err)
	require.JSONEq(t, `{"order":"A-1","qty":2,"tags":["x"],"ok":true,"none":null}`, string(j))

	odd, err := msgpack.Marshal(map[int]string{1: "a"})
	require.NoError(t, err)
	v, err := FromMsgpack(odd)
	require.NoError(t, err)
	_, err = json.Marshal(v)
	require.NoError(t, err, "maps with other keys become writable")

	empty, err := ToMsgpack(nil)
	require.NoError(t, err)
	v, err = FromMsgpack(empty)
	require.NoError(t, err)
	require.Nil(t, v)
}
