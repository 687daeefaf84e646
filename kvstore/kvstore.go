package kvstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// Errors. Both keep the JetStream cause in their chain.
var (
	ErrNotFound = errors.New("kvstore: key not found")
	ErrConflict = errors.New("kvstore: revision conflict")
)

// InlineLimit is the largest value stored directly in a KV entry. NATS's default maximum
// message size is 1 MiB; the margin leaves room for headers.
const InlineLimit = 768 << 10

const (
	frameInline byte = 0
	frameBlob   byte = 1
)

// Entry is a stored value with the revision to compare against on update.
type Entry struct {
	Key      string
	Value    []byte
	Revision uint64
}

// Store is one KV bucket plus the object store that holds its large values. It is safe for
// concurrent use.
type Store struct {
	kv    jetstream.KeyValue
	blobs jetstream.ObjectStore
	limit int
}

// Open binds to an existing bucket and blob store (see internal/topology).
func Open(ctx context.Context, js jetstream.JetStream, bucket, blobBucket string) (*Store, error) {
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("kvstore: open bucket %s: %w", bucket, err)
	}
	blobs, err := js.ObjectStore(ctx, blobBucket)
	if err != nil {
		return nil, fmt.Errorf("kvstore: open object store %s: %w", blobBucket, err)
	}
	return &Store{kv: kv, blobs: blobs, limit: InlineLimit}, nil
}

// SetInlineLimit lowers the size above which values go to the object store (tests use it to
// exercise large values cheaply).
func (s *Store) SetInlineLimit(n int) { s.limit = n }

// Get returns the value of key, or ErrNotFound.
func (s *Store) Get(ctx context.Context, key string) (Entry, error) {
	e, err := s.kv.Get(ctx, key)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return Entry{}, fmt.Errorf("%w: %s", ErrNotFound, key)
		}
		return Entry{}, fmt.Errorf("kvstore: get %s: %w", key, err)
	}
	return s.entry(ctx, e.Key(), e.Value(), e.Revision())
}

// Create stores value under key if the key has no value; otherwise it returns ErrConflict.
func (s *Store) Create(ctx context.Context, key string, value []byte) (uint64, error) {
	framed, blob, err := s.frame(ctx, key, value)
	if err != nil {
		return 0, err
	}
	rev, err := s.kv.Create(ctx, key, framed)
	if err != nil {
		s.dropBlob(blob)
		if errors.Is(err, jetstream.ErrKeyExists) || isWrongSequence(err) {
			return 0, fmt.Errorf("%w: create %s: %w", ErrConflict, key, err)
		}
		return 0, fmt.Errorf("kvstore: create %s: %w", key, err)
	}
	return rev, nil
}

// Update stores value under key if its revision is still rev; otherwise it returns ErrConflict.
func (s *Store) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	framed, blob, err := s.frame(ctx, key, value)
	if err != nil {
		return 0, err
	}
	newRev, err := s.kv.Update(ctx, key, framed, rev)
	if err != nil {
		s.dropBlob(blob)
		// An Update conflict matches both of these; either way another writer got there first.
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) || isWrongSequence(err) {
			return 0, fmt.Errorf("%w: update %s at revision %d: %w", ErrConflict, key, rev, err)
		}
		return 0, fmt.Errorf("kvstore: update %s: %w", key, err)
	}
	return newRev, nil
}

// Put stores value whatever the key holds.
func (s *Store) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	framed, blob, err := s.frame(ctx, key, value)
	if err != nil {
		return 0, err
	}
	rev, err := s.kv.Put(ctx, key, framed)
	if err != nil {
		s.dropBlob(blob)
		return 0, fmt.Errorf("kvstore: put %s: %w", key, err)
	}
	return rev, nil
}

// List returns every entry whose key starts with prefix + ".", in no particular order.
func (s *Store) List(ctx context.Context, prefix string) ([]Entry, error) {
	w, err := s.kv.Watch(ctx, prefix+".>", jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("kvstore: list %s: %w", prefix, err)
	}
	defer func() { _ = w.Stop() }()
	var out []Entry
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("kvstore: list %s: watcher closed", prefix)
			}
			if e == nil { // end of the initial values
				return out, nil
			}
			entry, err := s.entry(ctx, e.Key(), e.Value(), e.Revision())
			if err != nil {
				return nil, err
			}
			out = append(out, entry)
		case <-ctx.Done():
			return nil, fmt.Errorf("kvstore: list %s: %w", prefix, ctx.Err())
		}
	}
}

// Watch calls fn with the current value of key (if any) and every later one, until fn returns
// true, ctx ends, or an error occurs.
func (s *Store) Watch(ctx context.Context, key string, fn func(Entry) (done bool, err error)) error {
	w, err := s.kv.Watch(ctx, key, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("kvstore: watch %s: %w", key, err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("kvstore: watch %s: watcher closed", key)
			}
			if e == nil {
				continue
			}
			entry, err := s.entry(ctx, e.Key(), e.Value(), e.Revision())
			if err != nil {
				return err
			}
			done, err := fn(entry)
			if err != nil || done {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Unframe returns the value of a stored entry read straight from the bucket's stream (as a
// consumer of "$KV.<bucket>.>" sees it), fetching it from the object store if it is large.
func (s *Store) Unframe(ctx context.Context, key string, framed []byte) ([]byte, error) {
	e, err := s.entry(ctx, key, framed, 0)
	return e.Value, err
}

func (s *Store) frame(ctx context.Context, key string, value []byte) (framed []byte, blob string, err error) {
	if len(value) <= s.limit {
		framed = make([]byte, 1+len(value))
		framed[0] = frameInline
		copy(framed[1:], value)
		return framed, "", nil
	}
	// A fresh name per write: a losing writer's blob never overwrites the winner's.
	blob = key + "/" + nuid.Next()
	if _, err := s.blobs.PutBytes(ctx, blob, value); err != nil {
		return nil, "", fmt.Errorf("kvstore: store large value of %s (%d bytes): %w", key, len(value), err)
	}
	return append([]byte{frameBlob}, blob...), blob, nil
}

func (s *Store) entry(ctx context.Context, key string, framed []byte, rev uint64) (Entry, error) {
	if len(framed) == 0 {
		return Entry{}, fmt.Errorf("kvstore: %s: empty stored value", key)
	}
	switch framed[0] {
	case frameInline:
		return Entry{Key: key, Value: framed[1:], Revision: rev}, nil
	case frameBlob:
		name := string(framed[1:])
		v, err := s.blobs.GetBytes(ctx, name)
		if err != nil {
			return Entry{}, fmt.Errorf("kvstore: %s: read large value %s: %w", key, name, err)
		}
		return Entry{Key: key, Value: v, Revision: rev}, nil
	}
	return Entry{}, fmt.Errorf("kvstore: %s: unknown value frame %d", key, framed[0])
}

func (s *Store) dropBlob(name string) {
	if name == "" {
		return
	}
	_ = s.blobs.Delete(context.Background(), name)
}

func isWrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
