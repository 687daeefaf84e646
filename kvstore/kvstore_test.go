package kvstore_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/jetflow/jetflow/durabletest"
	"github.com/jetflow/jetflow/internal/jsasync"
	"github.com/jetflow/jetflow/internal/topology"
	"github.com/jetflow/jetflow/kvstore"
	"github.com/jetflow/jetflow/messages"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, durabletest.KnownLeaks()...) }

func openStore(t testing.TB) *kvstore.Store {
	t.Helper()
	nc := durabletest.NATS(t)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx := t.Context()
	require.NoError(t, topology.Provision(ctx, js, topology.Options{}))
	s, err := kvstore.Open(ctx, js, messages.CheckpointBucket, topology.BlobBucket)
	require.NoError(t, err)
	return s
}

// The suite below is what every store implementation must pass; run it with inline and with
// object-store values so both paths see every case.
func TestStore(t *testing.T) {
	for _, mode := range []struct {
		name  string
		limit int
	}{{"inline", kvstore.InlineLimit}, {"blob", 4}} {
		t.Run(mode.name, func(t *testing.T) {
			s := openStore(t)
			s.SetInlineLimit(mode.limit)
			ctx := t.Context()

			t.Run("get missing", func(t *testing.T) {
				_, err := s.Get(ctx, "e1.missing")
				require.ErrorIs(t, err, kvstore.ErrNotFound)
			})
			t.Run("create then conflict", func(t *testing.T) {
				rev, err := s.Create(ctx, "e1.1", []byte("first value"))
				require.NoError(t, err)
				_, err = s.Create(ctx, "e1.1", []byte("second value"))
				require.ErrorIs(t, err, kvstore.ErrConflict)
				e, err := s.Get(ctx, "e1.1")
				require.NoError(t, err)
				require.Equal(t, "first value", string(e.Value))
				require.Equal(t, rev, e.Revision)
			})
			t.Run("update compare-and-set", func(t *testing.T) {
				rev, err := s.Create(ctx, "e1.2", []byte("v1"))
				require.NoError(t, err)
				rev2, err := s.Update(ctx, "e1.2", []byte("v2 longer"), rev)
				require.NoError(t, err)
				_, err = s.Update(ctx, "e1.2", []byte("stale"), rev)
				require.ErrorIs(t, err, kvstore.ErrConflict)
				e, err := s.Get(ctx, "e1.2")
				require.NoError(t, err)
				require.Equal(t, "v2 longer", string(e.Value))
				require.Equal(t, rev2, e.Revision)
			})
			t.Run("racing creators agree", func(t *testing.T) {
				var wg sync.WaitGroup
				wins := make(chan string, 8)
				for i := range 8 {
					wg.Go(func() {
						v := []byte{byte('a' + i), 'x', 'y', 'z', 'w'}
						if _, err := s.Create(ctx, "e1.race", v); err == nil {
							wins <- string(v)
						} else {
							require.ErrorIs(t, err, kvstore.ErrConflict)
						}
					})
				}
				wg.Wait()
				close(wins)
				var winners []string
				for w := range wins {
					winners = append(winners, w)
				}
				require.Len(t, winners, 1)
				e, err := s.Get(ctx, "e1.race")
				require.NoError(t, err)
				require.Equal(t, winners[0], string(e.Value))
			})
			t.Run("list by prefix", func(t *testing.T) {
				for _, k := range []string{"e2.1", "e2.2", "e2.2-1", "e3.1"} {
					_, err := s.Put(ctx, k, []byte("value of "+k))
					require.NoError(t, err)
				}
				got, err := s.List(ctx, "e2")
				require.NoError(t, err)
				keys := map[string]string{}
				for _, e := range got {
					keys[e.Key] = string(e.Value)
				}
				require.Equal(t, map[string]string{"e2.1": "value of e2.1", "e2.2": "value of e2.2", "e2.2-1": "value of e2.2-1"}, keys)
				none, err := s.List(ctx, "nobody")
				require.NoError(t, err)
				require.Empty(t, none)
			})
			t.Run("list one level", func(t *testing.T) {
				// Few keys: one batched direct get; many: a watch. Both leave the deeper keys out.
				for _, deep := range []int{2, 100} {
					x := fmt.Sprintf("lv%d", deep)
					want := map[string]string{}
					for _, k := range []string{x + ".1", x + ".2", x + ".2-1"} {
						_, err := s.Put(ctx, k, []byte("value of "+k))
						require.NoError(t, err)
						want[k] = "value of " + k
					}
					for i := range deep {
						f, ok, err := s.PutAsync(fmt.Sprintf("%s.2.%d.3", x, i), []byte("deep"))
						require.NoError(t, err)
						require.True(t, ok)
						_, err = awaitAck(ctx, f)
						require.NoError(t, err)
					}
					_, err := s.Put(ctx, x+".2.0", []byte("three tokens"))
					require.NoError(t, err)
					got, err := s.ListShallow(ctx, x)
					require.NoError(t, err)
					keys := map[string]string{}
					for _, e := range got {
						keys[e.Key] = string(e.Value)
					}
					require.Equal(t, want, keys)
					all, err := s.List(ctx, x)
					require.NoError(t, err)
					require.Len(t, all, 3+deep+1)
				}
			})
		})
	}
}

func TestLargeValueStoredWhole(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	big := bytes.Repeat([]byte("0123456789abcdef"), 3<<20/16) // 3 MiB, three times NATS's message limit
	rev, err := s.Create(ctx, "big.1", big)
	require.NoError(t, err)
	e, err := s.Get(ctx, "big.1")
	require.NoError(t, err)
	require.Equal(t, big, e.Value)

	bigger := append(bytes.Clone(big), "tail"...)
	_, err = s.Update(ctx, "big.1", bigger, rev)
	require.NoError(t, err)
	_, err = s.Update(ctx, "big.1", big, rev)
	require.ErrorIs(t, err, kvstore.ErrConflict)
	all, err := s.List(ctx, "big")
	require.NoError(t, err)
	require.Len(t, all, 1)
	require.Equal(t, bigger, all[0].Value)
}

func awaitAck(ctx context.Context, f *jsasync.Future) (uint64, error) {
	select {
	case <-f.Done():
		return f.Result()
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}
