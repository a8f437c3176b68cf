import { AckPolicy, type JetStreamManager, RetentionPolicy, StorageType } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { laneAckWaitMs, laneMaxDeliver } from "../../kernel/job-record.ts";
import { type BrokerNames, laneConsumer } from "../names.ts";
import type { ClientSetups } from "./client-setups.ts";
import { duplicateWindowWithin, ensureStream, isNotFound, nanos, type Replicas } from "./streams.ts";

/** The durable consumer on each queue's advisories stream that dead-letter processing pulls from. */
export const deadLettersConsumer = "dead-letters";

/**
 * A queue's own streams: its tasks stream and the advisories stream that
 * captures the MAX_DELIVERIES advisories of its job consumers (with the
 * consumer dead-letter processing pulls from). Each queue has its own so
 * that NATS permissions can be given per queue (see names.ts).
 *
 * Set up together, once per client and queue (and again once an operation
 * found something missing: `ClientSetups`), on the queue's first use by
 * this runtime and before any job consumer of the queue is made: an advisory
 * sent while no stream captures it is lost, and its task would never end.
 * Existing streams are only looked at, never changed, so a process that may
 * read a queue but not create streams (a worker) works once they exist.
 */
export class QueueStreams {
  readonly #names: BrokerNames;
  readonly #advisoriesMaxAgeMs: number;
  readonly #replicas: Replicas;
  readonly #ready: WeakMap<NatsConnection, Map<string, Promise<void>>>;
  readonly #lanes: WeakMap<NatsConnection, Map<string, Promise<void>>>;
  readonly #listeners = new Set<(queue: string) => void>();

  constructor(names: BrokerNames, advisoriesMaxAgeMs: number, setups: ClientSetups, replicas: Replicas) {
    this.#names = names;
    this.#advisoriesMaxAgeMs = advisoriesMaxAgeMs;
    this.#replicas = replicas;
    this.#ready = setups.cache();
    this.#lanes = setups.cache();
  }

  /** Sets the queue's streams up on this client unless done already; a failed setup is tried again on next use. */
  ensure(nc: NatsConnection, jsm: JetStreamManager, queue: string): Promise<void> {
    return once(this.#ready, nc, queue, () => this.#setup(jsm, queue));
  }

  /**
   * The queue's lane consumer (after its streams), unless set up on this
   * client already: one durable consumer serving every lane job of the
   * queue, with the lane's ack wait and delivery limit (`fitsLane`). Made
   * by the first submitter or worker of the queue allowed to; a worker that
   * may not create consumers waits for a submitter to.
   */
  ensureLane(nc: NatsConnection, jsm: JetStreamManager, queue: string): Promise<void> {
    return once(this.#lanes, nc, queue, async () => {
      await this.ensure(nc, jsm, queue);
      await ensureConsumer(jsm, this.#names.tasksStream(queue), {
        durable_name: laneConsumer,
        filter_subject: this.#names.laneFilter(queue),
        ack_policy: AckPolicy.Explicit,
        ack_wait: nanos(laneAckWaitMs),
        max_deliver: laneMaxDeliver,
        max_ack_pending: 20_000,
      });
    });
  }

  /** The queue's lane was found gone (deleted, or lost with its stream): the next `ensureLane` makes it again. */
  forgetLane(nc: NatsConnection, queue: string): void {
    this.#lanes.get(nc)?.delete(queue);
  }

  /** Calls `listener` with each queue this runtime sets up from now on; returns the unsubscribe. */
  onSetUp(listener: (queue: string) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  async #setup(jsm: JetStreamManager, queue: string): Promise<void> {
    const n = this.#names;
    // Advisories first: whenever the tasks stream exists, its advisories are captured.
    await ensureStream(
      jsm,
      {
        name: n.advisoriesStream(queue),
        subjects: [n.maxDeliveriesSubject(queue)],
        retention: RetentionPolicy.Workqueue,
        storage: StorageType.File,
        ...duplicateWindowWithin(this.#advisoriesMaxAgeMs),
      },
      this.#replicas,
    );
    // num_replicas not given (0): the consumer has its stream's replicas.
    await ensureConsumer(jsm, n.advisoriesStream(queue), {
      durable_name: deadLettersConsumer,
      ack_policy: AckPolicy.Explicit,
      ack_wait: nanos(30_000),
    });
    await ensureStream(
      jsm,
      {
        name: n.tasksStream(queue),
        subjects: n.tasksStreamSubjects(queue),
        // Each task is removed once acked/termed: the stream holds only open work.
        retention: RetentionPolicy.Workqueue,
        storage: StorageType.File,
        duplicate_window: nanos(120_000),
      },
      this.#replicas,
    );
    for (const listener of this.#listeners) listener(queue);
  }
}

/** The setup cached per client and queue; a failed one is un-cached, to be tried again on next use. */
const once = (
  cache: WeakMap<NatsConnection, Map<string, Promise<void>>>,
  nc: NatsConnection,
  queue: string,
  setup: () => Promise<void>,
): Promise<void> => {
  let byQueue = cache.get(nc);
  if (!byQueue) {
    byQueue = new Map();
    cache.set(nc, byQueue);
  }
  let ready = byQueue.get(queue);
  if (!ready) {
    ready = setup();
    const mine = byQueue;
    // The caller sees the failure through `ready`; here it only un-caches it.
    ready.catch(() => mine.delete(queue));
    mine.set(queue, ready);
  }
  return ready;
};

/** Creates the durable consumer unless it exists (looked at first: adding needs a permission reading does not). */
const ensureConsumer = async (
  jsm: JetStreamManager,
  stream: string,
  config: Parameters<JetStreamManager["consumers"]["add"]>[1] & { durable_name: string },
) => {
  try {
    await jsm.consumers.info(stream, config.durable_name);
    return;
  } catch (error) {
    if (!isNotFound(error)) throw error;
  }
  await jsm.consumers.add(stream, config);
};
