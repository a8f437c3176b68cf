import {
  JetStreamApiError,
  type JetStreamClient,
  type JetStreamManager,
  jetstreamManager,
  StorageType,
} from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { RevisionConflict } from "../../kernel/errors.ts";
import {
  decodeFlowIfReadable,
  decodeFlowRecord,
  encodeFlowRecord,
  type FlowRecord,
} from "../../kernel/flow-record.ts";
import type { FlowStore, LiveMark } from "../flow-store.ts";
import { scanBucketEntries } from "./bucket-reads.ts";
import type { NatsJobBroker } from "./job-broker.ts";
import { ensureBucket, eraseEntryAt, isNotFound } from "./streams.ts";

const live = "live.";

/** KV compare-and-set failures become `RevisionConflict`: the driver re-reads and steps again. */
const casConflict =
  (key: string) =>
  (error: unknown): never => {
    if (error instanceof JetStreamApiError && error.code === 10071) {
      throw new RevisionConflict({ message: `flow record ${key} changed concurrently`, key });
    }
    throw error;
  };

/**
 * Flow records in a KV bucket (`<prefix>_flows`, file storage, history 1),
 * one key per flow. Every call runs through the broker's supervised
 * operations (deadline, retry of transient errors, set-up again after a
 * store reset).
 */
export const natsFlows = (broker: NatsJobBroker): FlowStore & { provision(): Promise<void> } => {
  const buckets = broker.setups.once<KV>();
  const bucket = (nc: NatsConnection): Promise<KV> =>
    buckets(nc, async () =>
      ensureBucket(
        nc,
        await jetstreamManager(nc),
        broker.names.flowsBucket,
        { history: 1, storage: StorageType.File },
        broker.replicas,
      ),
    );
  // Read without making the bucket: none yet (no flow ever submitted) is no flow, and a reader
  // (a cleanup pass, a dry run included; a driver's sweep) changes nothing on the server.
  const entriesIfAny = (js: JetStreamClient, jsm: JetStreamManager, keys: string) =>
    scanBucketEntries(js, jsm, broker.names.flowsBucket, keys).catch((error: unknown) => {
      if (isNotFound(error)) return new Map<string, never>();
      throw error;
    });
  return {
    provision: () => broker.run("flow.provision", async (nc) => void (await bucket(nc))),
    createFlow: (record) =>
      broker.run("flow.create", async (nc) =>
        (await bucket(nc)).create(record.id, encodeFlowRecord(record)).catch(casConflict(record.id)),
      ),
    getFlow: (id) =>
      broker.run("flow.get", async (nc) => {
        const entry = await (await bucket(nc)).get(id);
        if (entry?.operation !== "PUT") return undefined;
        return { record: decodeFlowRecord(entry.string()), revision: entry.revision };
      }),
    updateFlow: (record, revision) =>
      broker.run("flow.update", async (nc) =>
        (await bucket(nc))
          .update(record.id, encodeFlowRecord(record), revision)
          .catch(casConflict(record.id)),
      ),
    markLive: (id, at) =>
      broker.run("flow.mark", async (nc) => {
        await (await bucket(nc)).put(`${live}${id}`, JSON.stringify({ v: 1, at }));
      }),
    // The marks only, in one pass whose consumer is deleted at its end (none when there is no
    // mark: they are purged, markers and all): marks are the flows not settled, never every flow.
    listLive: () =>
      broker.run("flow.marks", async (nc) => {
        const { js, jsm } = await broker.handles(nc);
        const marks: LiveMark[] = [];
        for (const [key, entry] of await entriesIfAny(js, jsm, `${live}>`)) {
          if (entry.value === undefined) continue;
          marks.push({
            id: key.slice(live.length),
            revision: entry.revision,
            markedAt: (JSON.parse(entry.value) as { at: number }).at,
          });
        }
        return marks;
      }),
    // Purged from the stream, marker and all (up to `revision`: a mark written since stays), as a
    // lease that goes is: the bucket keeps no message per flow that ever settled.
    unmarkLive: (id, revision) =>
      broker.run("flow.unmark", async (nc) => {
        await bucket(nc);
        const { jsm } = await broker.handles(nc);
        const name = broker.names.flowsBucket;
        await jsm.streams.purge(`KV_${name}`, {
          filter: `$KV.${name}.${live}${id}`,
          ...(revision === undefined ? {} : { seq: revision + 1 }),
        });
      }),
    // A flow id is one token (no dot): `*` reads the records, never the marks.
    listFlows: () =>
      broker.run("flow.list", async (nc) => {
        const { js, jsm } = await broker.handles(nc);
        const flows: Array<{ record: FlowRecord; revision: number }> = [];
        for (const [, entry] of await entriesIfAny(js, jsm, "*")) {
          const record = entry.value === undefined ? undefined : decodeFlowIfReadable(entry.value);
          if (record) flows.push({ record, revision: entry.revision });
        }
        return flows;
      }),
    // Erased by sequence, as an expired job record is: a KV delete would leave its marker for good.
    removeFlow: (id, revision) =>
      broker.run("flow.remove", async (nc) => {
        const { jsm } = await broker.handles(nc);
        return eraseEntryAt(jsm, broker.names.flowsBucket, id, revision, "value");
      }),
  };
};
