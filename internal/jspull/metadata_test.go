package jspull

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// Both forms of the ack reply subject are read: without a domain, and with a domain and an
// account hash.
func TestMetadataFromTheReplySubject(t *testing.T) {
	for _, tc := range []struct{ reply, domain string }{
		{"$JS.ACK.W.C.2.17.9.1700000000000000001.4", ""},
		{"$JS.ACK.hub.ACCHASH.W.C.2.17.9.1700000000000000001.4.rand", "hub"},
		{"$JS.ACK._.ACCHASH.W.C.2.17.9.1700000000000000001.4.rand", ""},
	} {
		md, err := (&msg{m: &nats.Msg{Reply: tc.reply}}).Metadata()
		require.NoError(t, err, tc.reply)
		require.Equal(t, "W", md.Stream, tc.reply)
		require.Equal(t, "C", md.Consumer, tc.reply)
		require.Equal(t, tc.domain, md.Domain, tc.reply)
		require.EqualValues(t, 2, md.NumDelivered, tc.reply)
		require.EqualValues(t, 17, md.Sequence.Stream, tc.reply)
		require.EqualValues(t, 9, md.Sequence.Consumer, tc.reply)
		require.Equal(t, time.Unix(0, 1700000000000000001), md.Timestamp, tc.reply)
		require.EqualValues(t, 4, md.NumPending, tc.reply)
	}
	for _, reply := range []string{"", "_INBOX.x", "$JS.ACK.W.C.2.x.9.1.4", "$JS.ACK.W.C"} {
		_, err := (&msg{m: &nats.Msg{Reply: reply}}).Metadata()
		require.Error(t, err, reply)
	}
}
