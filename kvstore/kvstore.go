package kvstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/jetflow/jetflow/internal/jsasync"
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
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	blobs  jetstream.ObjectStore
	limit  int
	nc     *nats.Conn
	bucket string
	// direct: List reads with one batched direct get (an atomic snapshot, no consumer to create).
	// Only on an unreplicated bucket: a replica may answer a direct get, and may lag.
	direct bool

	pubOnce sync.Once
	pub     *jsasync.Publisher
	pubErr  error

	muxMu     sync.Mutex
	muxSub    *nats.Subscription
	muxPrefix string
	mux       map[string]chan *nats.Msg
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
	st := &Store{js: js, kv: kv, blobs: blobs, limit: InlineLimit, nc: js.Conn(), bucket: bucket}
	if status, err := kv.Status(ctx); err == nil {
		if bs, ok := status.(*jetstream.KeyValueBucketStatus); ok {
			cfg := bs.StreamInfo().Config
			st.direct = cfg.Replicas <= 1 && cfg.AllowDirect
		}
	}
	return st, nil
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

// PutAsync starts storing value under key, whatever the key holds, and returns at once; the
// future reports the outcome. ok is false for a value too large for one message: use Put.
func (s *Store) PutAsync(key string, value []byte) (f *jsasync.Future, ok bool, err error) {
	if len(value) > s.limit {
		return nil, false, nil
	}
	f, err = s.publish(&nats.Msg{Subject: "$KV." + s.bucket + "." + key, Data: inlineFrame(value)})
	if err != nil {
		return nil, true, fmt.Errorf("kvstore: put %s: %w", key, err)
	}
	return f, true, nil
}

// publish publishes m asynchronously (every Store has its publisher, made on first use).
func (s *Store) publish(m *nats.Msg) (*jsasync.Future, error) {
	s.pubOnce.Do(func() { s.pub, s.pubErr = jsasync.New(s.nc, asyncMaxPending, asyncTimeout) })
	if s.pubErr != nil {
		return nil, s.pubErr
	}
	return s.pub.Publish(m, asyncStallWait)
}

// Limits of a Store's asynchronous writes: how many await their PubAck at once, how long a
// write waits for room, and how long for its PubAck (one lost in a leader change).
const (
	asyncMaxPending = 4096
	asyncStallWait  = 10 * time.Second
	asyncTimeout    = 10 * time.Second
)

// CreateAsync starts a create-if-absent of key and returns at once; the future reports the
// outcome (IsConflict tells a key that existed). ok is false for a value too large for one
// message: use Create.
func (s *Store) CreateAsync(key string, value []byte) (f *jsasync.Future, ok bool, err error) {
	if len(value) > s.limit {
		return nil, false, nil
	}
	msg := &nats.Msg{Subject: "$KV." + s.bucket + "." + key, Data: inlineFrame(value),
		Header: nats.Header{jetstream.ExpectedLastSubjSeqHeader: expectNone}}
	f, err = s.publish(msg)
	if err != nil {
		return nil, true, fmt.Errorf("kvstore: create %s: %w", key, err)
	}
	return f, true, nil
}

// expectNone is the expected last sequence of a key that must not exist yet (shared, never changed).
var expectNone = []string{"0"}

// IsConflict reports whether err, from CreateAsync's future, means the key existed.
func IsConflict(err error) bool { return errors.Is(err, ErrConflict) || isWrongSequence(err) }

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
	return s.list(ctx, prefix+".>")
}

// ListShallow returns the entries whose key is prefix + "." + one more token: "x.1" and
// "x.2-1" for prefix "x", not "x.2.0". A filter of one wildcard is served from the stream's
// index of subjects: the deeper keys cost nothing to skip.
func (s *Store) ListShallow(ctx context.Context, prefix string) ([]Entry, error) {
	return s.list(ctx, prefix+".*")
}

func (s *Store) list(ctx context.Context, filter string) ([]Entry, error) {
	if s.direct {
		if out, ok, err := s.directList(ctx, filter); ok || err != nil {
			return out, err
		}
	}
	return s.watch(ctx, filter)
}

// ListMany is List for a listing expected to hold more than a few dozen keys: it reads with a
// watch at once. (A batched direct get answers at most directListMax keys, yet the server first
// gathers every key under the prefix: for 1,000 keys List takes a third longer than this.)
func (s *Store) ListMany(ctx context.Context, prefix string) ([]Entry, error) {
	return s.watch(ctx, prefix+".>")
}

// directListMax is the most keys directList reads; larger listings are faster with a watch.
const directListMax = 64

// directList asks the stream for the last message of every key matching filter in one request
// (a JetStream batched direct get). ok is false when there are more than directListMax keys or
// the answer would pass the server's byte limit: the caller lists another way.
func (s *Store) directList(ctx context.Context, filter string) (out []Entry, ok bool, err error) {
	prefix := filter
	replies, inbox, done, err := s.replies()
	if err != nil {
		return nil, false, fmt.Errorf("kvstore: list %s: %w", prefix, err)
	}
	defer done()
	kvPrefix := "$KV." + s.bucket + "."
	req, _ := json.Marshal(map[string]any{"multi_last": []string{kvPrefix + filter}, "batch": directListMax})
	if err := s.nc.PublishRequest("$JS.API.DIRECT.GET.KV_"+s.bucket, inbox, req); err != nil {
		return nil, false, fmt.Errorf("kvstore: list %s: %w", prefix, err)
	}
	timeout := time.NewTimer(5 * time.Second)
	defer timeout.Stop()
	for {
		var m *nats.Msg
		select {
		case m = <-replies:
		case <-ctx.Done():
			return nil, false, fmt.Errorf("kvstore: list %s: %w", prefix, ctx.Err())
		case <-timeout.C:
			return nil, false, fmt.Errorf("kvstore: list %s: no answer from the stream", prefix)
		}
		switch m.Header.Get("Status") {
		case "":
		case "204": // end of batch
			if np := m.Header.Get("Nats-Num-Pending"); np != "" && np != "0" {
				return nil, false, nil // more than one batch: list another way
			}
			return out, true, nil
		case "404":
			return nil, true, nil // no keys
		default: // 413 Too Many Results, and anything else: list another way
			return nil, false, nil
		}
		if op := m.Header.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
			continue
		}
		rev, _ := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
		key := strings.TrimPrefix(m.Header.Get(jetstream.SubjectHeader), kvPrefix)
		e, err := s.entry(ctx, key, m.Data, rev)
		if err != nil {
			return nil, false, err
		}
		out = append(out, e)
	}
}

// replies returns a channel for the answers to one multi-message request, its reply subject, and
// the function that frees them. One wildcard subscription serves every request of the Store.
func (s *Store) replies() (<-chan *nats.Msg, string, func(), error) {
	s.muxMu.Lock()
	defer s.muxMu.Unlock()
	if s.muxSub == nil {
		s.muxPrefix = s.nc.NewRespInbox() + "."
		s.mux = map[string]chan *nats.Msg{}
		sub, err := s.nc.Subscribe(s.muxPrefix+"*", func(m *nats.Msg) {
			token := strings.TrimPrefix(m.Subject, s.muxPrefix)
			s.muxMu.Lock()
			ch := s.mux[token]
			s.muxMu.Unlock()
			if ch != nil {
				ch <- m
			}
		})
		if err != nil {
			return nil, "", nil, err
		}
		s.muxSub = sub
	}
	token := nuid.Next()
	ch := make(chan *nats.Msg, directListMax+2)
	s.mux[token] = ch
	return ch, s.muxPrefix + token, func() {
		s.muxMu.Lock()
		delete(s.mux, token)
		s.muxMu.Unlock()
	}, nil
}

// ListAll returns every entry of the bucket.
func (s *Store) ListAll(ctx context.Context) ([]Entry, error) { return s.watch(ctx, ">") }

// watch returns the entries whose keys match the filter, read with a watch that ends at the
// last one stored.
func (s *Store) watch(ctx context.Context, filter string) ([]Entry, error) {
	prefix := filter
	w, err := s.kv.Watch(ctx, filter, jetstream.IgnoreDeletes())
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

// Unframe returns the value of a stored entry read straight from the bucket's stream (as a
// consumer of "$KV.<bucket>.>" sees it), fetching it from the object store if it is large.
func (s *Store) Unframe(ctx context.Context, key string, framed []byte) ([]byte, error) {
	e, err := s.entry(ctx, key, framed, 0)
	return e.Value, err
}

func (s *Store) frame(ctx context.Context, key string, value []byte) (framed []byte, blob string, err error) {
	if len(value) <= s.limit {
		return inlineFrame(value), "", nil
	}
	// A fresh name per write: a losing writer's blob never overwrites the winner's.
	blob = key + "/" + nuid.Next()
	if _, err := s.blobs.PutBytes(ctx, blob, value); err != nil {
		return nil, "", fmt.Errorf("kvstore: store large value of %s (%d bytes): %w", key, len(value), err)
	}
	return append([]byte{frameBlob}, blob...), blob, nil
}

// inlineFrame returns value framed as stored inline.
func inlineFrame(value []byte) []byte {
	framed := make([]byte, 1+len(value))
	framed[0] = frameInline
	copy(framed[1:], value)
	return framed
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
