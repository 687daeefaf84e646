package jsasync_test

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/jetflow/jetflow/durabletest"
	"github.com/jetflow/jetflow/internal/jsasync"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, durabletest.KnownLeaks()...) }

func connect(t *testing.T) *nats.Conn {
	t.Helper()
	nc := durabletest.NATS(t)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, err = js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}})
	require.NoError(t, err)
	return nc
}

func result(t *testing.T, f *jsasync.Future) (uint64, error) {
	t.Helper()
	select {
	case <-f.Done():
		return f.Result()
	case <-time.After(10 * time.Second):
		t.Fatal("no result")
		return 0, nil
	}
}

func TestPublishesAreAcknowledgedWithTheirSequence(t *testing.T) {
	nc := connect(t)
	p, err := jsasync.New(nc, 16, 5*time.Second)
	require.NoError(t, err)
	defer p.Close()
	var fs []*jsasync.Future
	for range 100 { // more than maxPending: Publish waits for room
		f, err := p.Publish(&nats.Msg{Subject: "s.a", Data: []byte("x")}, 5*time.Second)
		require.NoError(t, err)
		fs = append(fs, f)
	}
	for i, f := range fs {
		seq, err := result(t, f)
		require.NoError(t, err)
		require.EqualValues(t, i+1, seq)
	}

	// The stream's refusal is its API error; a subject no stream takes has no responder.
	m := &nats.Msg{Subject: "s.a", Data: []byte("y"), Header: nats.Header{jetstream.ExpectedLastSubjSeqHeader: []string{"0"}}}
	f, err := p.Publish(m, time.Second)
	require.NoError(t, err)
	_, err = result(t, f)
	var apiErr *jetstream.APIError
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, jetstream.JSErrCodeStreamWrongLastSequence, apiErr.ErrorCode)
	f, err = p.Publish(&nats.Msg{Subject: "nowhere", Data: []byte("z")}, time.Second)
	require.NoError(t, err)
	_, err = result(t, f)
	require.ErrorIs(t, err, jetstream.ErrNoStreamResponse)
}

// A PubAck that never comes fails its publish after the timeout, frees its room, and Close fails
// what is still pending.
func TestLostPubAcksTimeOutAndCloseFailsThePending(t *testing.T) {
	nc := connect(t)
	sink, err := nc.SubscribeSync("void") // a subscriber that never replies
	require.NoError(t, err)
	defer func() { _ = sink.Unsubscribe() }()
	p, err := jsasync.New(nc, 1, 200*time.Millisecond)
	require.NoError(t, err)
	f, err := p.Publish(&nats.Msg{Subject: "void", Data: []byte("x")}, time.Second)
	require.NoError(t, err)
	_, err = p.Publish(&nats.Msg{Subject: "void", Data: []byte("x")}, 10*time.Millisecond)
	require.ErrorIs(t, err, jsasync.ErrStalled, "the one room is taken")
	_, err = result(t, f)
	require.ErrorIs(t, err, jsasync.ErrTimeout)

	f, err = p.Publish(&nats.Msg{Subject: "void", Data: []byte("x")}, time.Second)
	require.NoError(t, err, "the timed-out publish gave its room back")
	p.Close()
	_, err = result(t, f)
	require.ErrorIs(t, err, jsasync.ErrClosed)
	_, err = p.Publish(&nats.Msg{Subject: "s.a", Data: []byte("x")}, time.Second)
	require.True(t, errors.Is(err, jsasync.ErrClosed))
}
