import { type JetStreamManager, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll } from "vitest";
import { brokerNames } from "../../src/adapters/names.ts";
import type { NatsJobBroker } from "../../src/adapters/nats/job-broker.ts";
import { createNatsBroker } from "../../src/adapters/nats/nats-broker.ts";
import { natsQueueControls } from "../../src/adapters/nats/queue-controls.ts";
import type { QueueControls } from "../../src/adapters/queue-controls.ts";
import { queuesFace } from "../../src/api/queues.ts";
import { createRuntimeCore } from "../../src/api/runtime-core.ts";
import { type Logger, silentLogger } from "../../src/kernel/logger.ts";
import { type NatsServerHandle, startNatsServer } from "./nats-server.ts";

const names = brokerNames("jetstate");

/** A request lost on its way (nats.js names it so): the server's answer never came. */
export const lostRequest = () => Object.assign(new Error("TIMEOUT"), { name: "TimeoutError" });

/** The client handles a replica's broker hands its queue controls: what a test wraps to lose requests. */
export type ControlsHandles = Awaited<ReturnType<NatsJobBroker["handles"]>>;

/**
 * A nats-server of the describe block's own (started in `beforeAll`, with a raw client of the
 * test's for its oracles), and replicas on it: each one runtime's queue controls on a client of
 * its own, all stopped in `afterAll`.
 */
export const useControlsReplicas = (holder: string) => {
  let server: NatsServerHandle | undefined;
  let raw: NatsConnection | undefined;
  let jsm: JetStreamManager | undefined;
  const stops: Array<() => Promise<void>> = [];
  beforeAll(async () => {
    server = await startNatsServer();
    raw = await connect({ servers: server.url, name: "raw" });
    jsm = await jetstreamManager(raw);
  });
  afterAll(async () => {
    for (const stop of stops) await stop();
    await raw?.close();
    await server?.dispose();
  });
  const manager = () => {
    if (!jsm) throw new Error("the server is started in beforeAll: read it in a test");
    return jsm;
  };
  return {
    /** The test's own manager, on its raw client. */
    jsm: manager,
    /**
     * One runtime's queue controls on a client of its own, its broker's client handles passed
     * through `wrap` (a request lost, counted): with the stop of that runtime.
     */
    replica: async (
      wrap: (handles: ControlsHandles) => ControlsHandles = (handles) => handles,
      log: Logger = silentLogger(),
    ): Promise<{ controls: QueueControls; stop: () => Promise<void> }> => {
      const core = await createRuntimeCore({ servers: server!.url, logger: silentLogger() });
      const broker = createNatsBroker(core, { retentionMs: 3600_000, holder });
      let stopped: Promise<void> | undefined;
      const stop = () => {
        stopped ??= (async () => {
          await broker.close();
          await core.stop();
        })();
        return stopped;
      };
      stops.push(stop);
      const inner = broker.jetstream;
      const wrapped = new Proxy(inner, {
        get(target, key) {
          const value = Reflect.get(target, key, target);
          if (key !== "handles") return typeof value === "function" ? value.bind(target) : value;
          return async (nc: NatsConnection) => wrap(await target.handles(nc));
        },
      }) as NatsJobBroker;
      return { controls: natsQueueControls(core, wrapped, log), stop };
    },
    /** The admin's face of `controls` (`configure()`). */
    face: (controls: QueueControls) => queuesFace(controls, new Set(["admin"] as const), () => Date.now()),
    /** The permits the stream holds on the queue's concurrency pool, free or held, read raw. */
    permitsOf: async (queue: string): Promise<number> => {
      const subject = names.permitsSubject(queue, "concurrency");
      const info = await manager().streams.info(names.permitsStream, { subjects_filter: subject });
      return info.state.subjects?.[subject] ?? 0;
    },
    /** The permits stream deleted by hand and made again empty (as `rt.admin.provision()` makes it). */
    deletePermitsStream: async () => {
      const config = (await manager().streams.info(names.permitsStream)).config;
      await manager().streams.delete(names.permitsStream);
      await manager().streams.add(config);
    },
  };
};
