package jsasync

import (
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

func TestParsePubAck(t *testing.T) {
	for _, tc := range []struct {
		body string
		seq  uint64
		err  bool
	}{
		{`{"stream":"S","seq":42}`, 42, false},
		{`{"stream":"S","seq": 7,"duplicate":true}`, 7, false},
		{`{"stream":"error","domain":"d","seq":3}`, 3, false}, // a stream named "error" is not one
		{`{"stream":"S"}`, 0, true},
		{`{"stream":"S","seq":x}`, 0, true},
		{`{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 1"},"stream":"S","seq":0}`, 0, true},
		{`{"error":`, 0, true},
	} {
		seq, err := parsePubAck(&nats.Msg{Data: []byte(tc.body)})
		require.Equal(t, tc.err, err != nil, "%s: %v", tc.body, err)
		require.Equal(t, tc.seq, seq, tc.body)
	}
	_, err := parsePubAck(&nats.Msg{Data: []byte(`{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 1"}}`)})
	var apiErr *jetstream.APIError
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, jetstream.JSErrCodeStreamWrongLastSequence, apiErr.ErrorCode)
	_, err = parsePubAck(&nats.Msg{Header: nats.Header{"Status": []string{"503"}}})
	require.ErrorIs(t, err, jetstream.ErrNoStreamResponse)
	_, err = parsePubAck(&nats.Msg{Header: nats.Header{"Status": []string{"408"}}})
	require.Error(t, err)
}
