package topology

import (
	"context"
	"fmt"
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
}

// Provision creates or updates jetflow's streams and buckets.
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
		{Name: messages.TimerStream, Subjects: []string{messages.TimerSubjects}},
	}
	for _, sc := range streams {
		sc.Retention = jetstream.WorkQueuePolicy
		sc.Storage = storage
		sc.Replicas = o.Replicas
		sc.Duplicates = 2 * time.Minute
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("topology: stream %s: %w", sc.Name, err)
		}
	}
	for _, bucket := range []string{messages.ExecutionBucket, messages.CheckpointBucket, messages.BatchBucket} {
		_, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: bucket, History: 1, Storage: storage, Replicas: o.Replicas,
		})
		if err != nil {
			return fmt.Errorf("topology: bucket %s: %w", bucket, err)
		}
	}
	_, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket: BlobBucket, Storage: storage, Replicas: o.Replicas,
	})
	if err != nil {
		return fmt.Errorf("topology: object store %s: %w", BlobBucket, err)
	}
	return nil
}
