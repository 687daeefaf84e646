package kvstore_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/jetflow/jetflow/kvstore"
	"github.com/jetflow/jetflow/messages"
)

// Checkpoint save and load: what a step's write and a replay's read cost against an embedded
// server (go test -bench . ./kvstore).
func BenchmarkCreate(b *testing.B) {
	s := openStore(b)
	value := messages.MustEncode(&messages.Checkpoint{OpID: "1", OpKind: messages.OpStep, Status: messages.OpSucceeded, Result: []byte("0123456789abcdefghij")})
	ctx := context.Background()
	i := 0
	for b.Loop() {
		i++
		if _, err := s.Create(ctx, fmt.Sprintf("e.%d", i), value); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkList(b *testing.B) {
	for _, n := range []int{4, 1000} {
		b.Run(fmt.Sprintf("%d-checkpoints", n), func(b *testing.B) {
			s := openStore(b)
			ctx := context.Background()
			value := messages.MustEncode(&messages.Checkpoint{OpID: "1", OpKind: messages.OpStep, Status: messages.OpSucceeded})
			for i := range n {
				if _, err := s.Create(ctx, fmt.Sprintf("x.%d", i), value); err != nil {
					b.Fatal(err)
				}
			}
			for _, l := range []struct {
				name string
				list func(context.Context, string) ([]kvstore.Entry, error)
			}{{"List", s.List}, {"ListMany", s.ListMany}} {
				b.Run(l.name, func(b *testing.B) {
					for b.Loop() {
						got, err := l.list(ctx, "x")
						if err != nil || len(got) != n {
							b.Fatalf("%d entries, %v", len(got), err)
						}
					}
				})
			}
		})
	}
}
