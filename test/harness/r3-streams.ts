import { type JetStreamManager, jetstreamManager, RetentionPolicy, StorageType } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { brokerNames } from "../../src/adapters/names.ts";

/**
 * jetstate's streams and buckets for `queues`, made here at 3 replicas before
 * any runtime starts. jetstate looks a stream up before it creates one and
 * never changes one it finds, so its runtimes use these as they are.
 *
 * Why the test makes them: until the runtime's own `replicas` option exists,
 * jetstate creates everything at R1, and an R1 stream dies with its node. This
 * is the one place to swap for `createRuntime({ replicas: 3 })` once it does.
 * The configs are jetstate's (src/adapters/nats/queue-streams.ts, job-broker.ts,
 * dead-letters.ts, job-leases.ts) with `num_replicas: 3`; the names come from
 * src/adapters/names.ts.
 */
export const createJetstateStreamsR3 = async (
  nc: NatsConnection,
  { prefix = "jetstate", queues }: { prefix?: string; queues: readonly string[] },
): Promise<void> => {
  const jsm = await jetstreamManager(nc);
  const names = brokerNames(prefix);
  const replicas = 3;
  const retention = nanos(7 * 24 * 3600_000); // jobs.retentionMs's default
  const duplicateWindow = nanos(120_000);
  for (const queue of queues) {
    // Advisories first, as jetstate does: whenever the tasks stream exists, its advisories are captured.
    await addStream(jsm, {
      name: names.advisoriesStream(queue),
      subjects: [names.maxDeliveriesSubject(queue)],
      retention: RetentionPolicy.Workqueue,
      storage: StorageType.File,
      max_age: retention,
      num_replicas: replicas,
    });
    await addStream(jsm, {
      name: names.tasksStream(queue),
      subjects: names.tasksStreamSubjects(queue),
      retention: RetentionPolicy.Workqueue,
      storage: StorageType.File,
      duplicate_window: duplicateWindow,
      num_replicas: replicas,
    });
  }
  await addStream(jsm, {
    name: names.resultsStream,
    subjects: [`${prefix}.results.>`],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    max_age: retention,
    duplicate_window: duplicateWindow,
    num_replicas: replicas,
  });
  await addStream(jsm, {
    name: names.deadStream,
    subjects: [`${prefix}.dead.>`],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    max_age: retention,
    num_replicas: replicas,
  });
  const kvm = new Kvm(nc);
  for (const bucket of [names.jobsBucket, names.leasesBucket]) {
    await kvm.create(bucket, { history: 1, storage: StorageType.File, replicas });
  }
};

const nanos = (ms: number) => ms * 1_000_000;

/** Adds the stream and checks the server placed it at the replicas asked for (it may not say no). */
const addStream = async (
  jsm: JetStreamManager,
  config: Parameters<JetStreamManager["streams"]["add"]>[0],
) => {
  const info = await jsm.streams.add(config);
  if (info.config.num_replicas !== config.num_replicas) {
    throw new Error(
      `stream ${config.name}: asked for ${config.num_replicas} replicas, got ${info.config.num_replicas}`,
    );
  }
};
