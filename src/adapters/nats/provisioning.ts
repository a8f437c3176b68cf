import type { NatsDeadLetters } from "./dead-letters.ts";
import type { NatsDelayedTasks } from "./delayed-tasks.ts";
import type { NatsJobBroker } from "./job-broker.ts";
import { agentsBucketFor, openAgentBucket } from "./kv-agent-store.ts";
import type { NatsContext } from "./nats-context.ts";

/** A part of the broker that makes its own stream or bucket, unless it exists. */
interface MakesItsStore {
  provision(): Promise<void>;
}

/** The broker's parts whose streams and buckets `rt.admin.provision()` makes. */
export interface ProvisionedParts {
  /** The dead-letters stream; each queue's advisories stream and its dead-letters consumer. */
  readonly dead: Pick<NatsDeadLetters, "provision" | "ensure">;
  /** The supervision leases bucket. */
  readonly leases: MakesItsStore;
  /** The workers' presence bucket. */
  readonly presence: MakesItsStore;
  /** The HTTP API's answers bucket. */
  readonly taskLeasing: MakesItsStore;
  /** The queues' settings bucket and the permits stream. */
  readonly queueControls: MakesItsStore;
  /** The flows bucket. */
  readonly flows: MakesItsStore;
  /** The schedules bucket. */
  readonly schedules: MakesItsStore;
  /** Each queue's delayed stream and its `due` consumer. */
  readonly delayed: Pick<NatsDelayedTasks, "provision">;
}

/**
 * The broker's `provision(queues)`: the results stream and jobs bucket, the
 * agents bucket; then dead letters, leases, presence, the HTTP API's
 * answers, queue controls, flows, schedules; then each queue's streams. One
 * after the other, each unless it exists.
 */
export const provisionStores =
  (core: NatsContext, js: NatsJobBroker, parts: ProvisionedParts) =>
  async (queues: readonly string[]): Promise<void> => {
    await js.run("broker.provision", async (nc) => {
      js.setups.forget(nc); // looked up on the server: after a server back empty, none is set up
      await js.handles(nc);
      await openAgentBucket(nc, agentsBucketFor(core.options.prefix), js.replicas);
    });
    await parts.dead.provision();
    await parts.leases.provision();
    await parts.presence.provision();
    await parts.taskLeasing.provision();
    await parts.queueControls.provision();
    await parts.flows.provision();
    await parts.schedules.provision();
    for (const queue of queues) {
      await parts.dead.ensure(queue);
      await parts.delayed.provision(queue);
    }
  };
