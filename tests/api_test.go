package tests

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/jetflow/jetflow/durable"
	"github.com/jetflow/jetflow/durabletest"
	"github.com/jetflow/jetflow/messages"
)

// apiCall sends one request to the public API, JSON or msgpack, and decodes the reply into a map.
func apiCall(t *testing.T, nc *nats.Conn, subject string, body any, asJSON bool) map[string]any {
	t.Helper()
	m := nats.NewMsg(subject)
	var err error
	if asJSON {
		m.Header.Set("Content-Type", "application/json")
		m.Data, err = json.Marshal(body)
	} else if raw, ok := body.([]byte); ok {
		m.Data = raw
	} else {
		m.Data, err = msgpack.Marshal(body)
	}
	require.NoError(t, err)
	reply, err := nc.RequestMsg(m, 30*time.Second)
	require.NoError(t, err)
	out := map[string]any{}
	if asJSON {
		require.Equal(t, "application/json", reply.Header.Get("Content-Type"))
		require.NoError(t, json.Unmarshal(reply.Data, &out), "%s", reply.Data)
	} else {
		require.Equal(t, "application/msgpack", reply.Header.Get("Content-Type"))
		require.NoError(t, msgpack.Unmarshal(reply.Data, &out))
	}
	return out
}

func errorType(reply map[string]any) any {
	if e, ok := reply["error"].(map[string]any); ok {
		return e["type"]
	}
	return nil
}

type quote struct {
	SKU string `msgpack:"sku"`
	Qty int    `msgpack:"qty"`
}

// The public API answers in the encoding it was asked in: a typed Go handler gets its input from
// JSON and from msgpack alike, and the result comes back in kind.
func TestPublicAPIInJSONAndMsgpack(t *testing.T) {
	env := durabletest.New(t)
	durabletest.Register(env, "quote", func(ctx durable.Context, q quote) (map[string]int, error) {
		return map[string]int{q.SKU: q.Qty * 150}, nil
	})
	release := make(chan struct{})
	durabletest.Register(env, "stuck", func(ctx durable.Context, _ string) (string, error) {
		return durable.Step(ctx, "s", func(sc durable.StepContext) (string, error) {
			select {
			case <-sc.Done():
			case <-release:
			}
			return "", sc.Err()
		})
	})
	defer close(release)
	nc := env.Conn()

	for _, asJSON := range []bool{true, false} {
		name := map[bool]string{true: "json", false: "msgpack"}[asJSON]
		t.Run(name, func(t *testing.T) {
			started := apiCall(t, nc, messages.APIStartSubject, map[string]any{
				"function": "quote", "input": map[string]any{"sku": "pen", "qty": 3}, "executionName": "quote-" + name}, asJSON)
			require.Nil(t, started["error"])
			require.Equal(t, "quote-"+name, started["executionId"])
			res := apiCall(t, nc, messages.APIResultSubject, map[string]any{"executionId": "quote-" + name, "waitMs": 20000}, asJSON)
			require.Equal(t, "SUCCEEDED", res["status"], "%v", res)
			require.EqualValues(t, 450, res["result"].(map[string]any)["pen"])
			require.NotEmpty(t, res["endedAt"])

			// Errors are data, in the same encoding.
			require.Equal(t, "BadRequest", errorType(apiCall(t, nc, messages.APIStartSubject, map[string]any{"function": ""}, asJSON)))
			require.Equal(t, "UnsupportedVersion", errorType(apiCall(t, nc, messages.APIStartSubject,
				map[string]any{"protocolVersion": 99, "function": "quote"}, asJSON)))
			require.Equal(t, "NotFound", errorType(apiCall(t, nc, messages.APIResultSubject, map[string]any{"executionId": "nobody"}, asJSON)))
			require.Equal(t, "BadRequest", errorType(apiCall(t, nc, messages.APIResultSubject,
				map[string]any{"executionId": "quote-" + name, "waitMs": -1}, asJSON)))

			// A result asked for without waiting is the state now; cancel stops it.
			started = apiCall(t, nc, messages.APIStartSubject, map[string]any{"function": "stuck", "executionName": "stuck-" + name}, asJSON)
			require.Nil(t, started["error"])
			now := apiCall(t, nc, messages.APIResultSubject, map[string]any{"executionId": "stuck-" + name}, asJSON)
			require.Contains(t, []any{"PENDING", "RUNNING"}, now["status"], "%v", now)
			require.Nil(t, apiCall(t, nc, messages.APICancelSubject, map[string]any{"executionId": "stuck-" + name, "reason": "enough"}, asJSON)["error"])
			res = apiCall(t, nc, messages.APIResultSubject, map[string]any{"executionId": "stuck-" + name, "waitMs": 20000}, asJSON)
			require.Equal(t, "CANCELLED", res["status"])
			require.Equal(t, "Cancelled", errorType(res))
			require.Equal(t, "AlreadyEnded", errorType(apiCall(t, nc, messages.APICancelSubject, map[string]any{"executionId": "stuck-" + name}, asJSON)))
		})
	}
	// Garbage is a BadRequest, not silence.
	require.Equal(t, "BadRequest", errorType(apiCall(t, nc, messages.APIStartSubject, []byte{0xc1, 0xff}, false)))
	// So is a request that claims a 4-billion-byte function name in a dozen bytes (msgpack would
	// allocate it), and the coordinator serves the next request.
	claims := []byte{0x81, 0xa8, 'f', 'u', 'n', 'c', 't', 'i', 'o', 'n', 0xdb, 0xff, 0xff, 0xff, 0xff}
	require.Equal(t, "BadRequest", errorType(apiCall(t, nc, messages.APIStartSubject, claims, false)))
	require.Equal(t, "NotFound", errorType(apiCall(t, nc, messages.APIResultSubject, map[string]any{"executionId": "never-started"}, true)))
}
