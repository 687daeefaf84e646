package recent

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSetEvictsTheOldest(t *testing.T) {
	s := New(3)
	for i := range 5 {
		s.Add(strconv.Itoa(i))
	}
	s.Add("4") // already there: no eviction
	for i, want := range []bool{false, false, true, true, true} {
		require.Equal(t, want, s.Has(strconv.Itoa(i)), "entry %d", i)
	}
}
