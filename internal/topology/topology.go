package topology

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow/jetflow/messages"
)

// BlobBucket is the object store that holds values too large for one KV entry.
const BlobBucket = "jetflow-blobs"

// Options shape what Provision creates.
type Options struct {
	// Replicas is the replication factor of every stream and bucket: 1 for a single server, 3 for
	// a 3-node cluster. 0 means 1.
	Replicas int
	// MemoryStorage keeps everything in memory (tests and benchmarks only: a restart loses it).
	MemoryStorage bool
	// LeaseTTL is the life of a coordinator's partition lease; 0 means 10s. Services other than the
	// coordinator leave it 0: they do not create the lease bucket.
	LeaseTTL time.Duration
}

// Provision creates what is missing of jetflow's streams and buckets. What exists is left alone
// unless its replication or subjects differ, or a work-queue stream made by an earlier version
// does not allow message TTLs yet: every service calls Provision at start, and updating a stream
// that others are creating consumers on is both needless and, in nats-server 2.15, racy.
func Provision(ctx context.Context, js jetstream.JetStream, o Options) error {
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	storage := jetstream.FileStorage
	if o.MemoryStorage {
		storage = jetstream.MemoryStorage
	}
	streams := []jetstream.StreamConfig{
		{Name: messages.TaskStream, Subjects: []string{messages.TaskSubjects}},
		{Name: messages.EventStream, Subjects: []string{messages.EventSubjects}},
	}
	for _, sc := range streams {
		sc.Retention = jetstream.WorkQueuePolicy
		sc.Storage = storage
		sc.Replicas = o.Replicas
		sc.Duplicates = 2 * time.Minute
		sc.AllowMsgTTL = true // the coordinator's keepers expire (coordinator/keeper.go)
		if err := retry(ctx, func() error { return ensureStream(ctx, js, sc) }); err != nil {
			return fmt.Errorf("topology: stream %s: %w", sc.Name, err)
		}
	}
	kvs := []jetstream.KeyValueConfig{
		{Bucket: messages.ExecutionBucket}, {Bucket: messages.CheckpointBucket}, {Bucket: messages.BatchBucket},
	}
	if o.LeaseTTL > 0 {
		kvs = append(kvs, jetstream.KeyValueConfig{Bucket: messages.LeaseBucket, TTL: o.LeaseTTL})
	}
	for _, kc := range kvs {
		kc.History, kc.Storage, kc.Replicas = 1, storage, o.Replicas
		if err := retry(ctx, func() error { return ensureKV(ctx, js, kc) }); err != nil {
			return fmt.Errorf("topology: bucket %s: %w", kc.Bucket, err)
		}
	}
	if _, err := js.ObjectStore(ctx, BlobBucket); errors.Is(err, jetstream.ErrBucketNotFound) {
		_, err = js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: BlobBucket, Storage: storage, Replicas: o.Replicas})
		if err != nil && !errors.Is(err, jetstream.ErrBucketExists) {
			return fmt.Errorf("topology: object store %s: %w", BlobBucket, err)
		}
	} else if err != nil {
		return fmt.Errorf("topology: object store %s: %w", BlobBucket, err)
	}
	return nil
}

// AllowMsgTTL reports whether both work-queue streams let messages expire. A server older than
// nats-server 2.11 ignores the setting: no message there may rely on a TTL.
func AllowMsgTTL(ctx context.Context, js jetstream.JetStream) (bool, error) {
	for _, name := range []string{messages.TaskStream, messages.EventStream} {
		st, err := js.Stream(ctx, name)
		if err != nil {
			return false, fmt.Errorf("topology: stream %s: %w", name, err)
		}
		if !st.CachedInfo().Config.AllowMsgTTL {
			return false, nil
		}
	}
	return true, nil
}

// retry calls fn until it succeeds, ctx ends, or it failed 10 times: a cluster that is electing
// leaders, or has a node down, answers "no suitable peers" or not at all for a moment.
func retry(ctx context.Context, fn func() error) error {
	var err error
	for attempt := range 10 {
		if err = fn(); err == nil || ctx.Err() != nil {
			return err
		}
		t := time.NewTimer(time.Duration(attempt+1) * 200 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
	return err
}

func ensureStream(ctx context.Context, js jetstream.JetStream, sc jetstream.StreamConfig) error {
	st, err := js.Stream(ctx, sc.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if _, err = js.CreateStream(ctx, sc); err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return err
		}
		return nil
	}
	if err != nil {
		return err
	}
	cur := st.CachedInfo().Config
	if cur.Replicas != sc.Replicas || !slices.Equal(cur.Subjects, sc.Subjects) || sc.AllowMsgTTL && !cur.AllowMsgTTL {
		_, err = js.UpdateStream(ctx, sc)
	}
	return err
}

func ensureKV(ctx context.Context, js jetstream.JetStream, kc jetstream.KeyValueConfig) error {
	kv, err := js.KeyValue(ctx, kc.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		if _, err = js.CreateKeyValue(ctx, kc); err != nil && !errors.Is(err, jetstream.ErrBucketExists) {
			return err
		}
		return nil
	}
	if err != nil {
		return err
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return err
	}
	info := st.(*jetstream.KeyValueBucketStatus).StreamInfo()
	if info.Config.Replicas != kc.Replicas || (kc.TTL > 0 && st.TTL() != kc.TTL) {
		_, err = js.UpdateKeyValue(ctx, kc)
	}
	return err
}
