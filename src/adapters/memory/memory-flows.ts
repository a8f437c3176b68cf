import { decodeFlowIfReadable, decodeFlowRecord, encodeFlowRecord } from "../../kernel/flow-record.ts";
import type { FlowStore } from "../flow-store.ts";
import type { MemoryKv } from "./memory-kv.ts";

const live = "live.";

/**
 * Flow records in the memory server's bucket: every runtime sharing the
 * server drives the same flows. A record over the server's max payload is
 * refused (`fits`), as NATS refuses it.
 */
export const memoryFlows = (
  kv: MemoryKv,
  open: (operation: string) => void,
  fits: (operation: string, body: string) => void,
): FlowStore => ({
  createFlow: async (record) => {
    open("flow.create");
    const body = encodeFlowRecord(record);
    fits("flow.create", body);
    return kv.create("flow.create", record.id, body);
  },
  getFlow: async (id) => {
    open("flow.get");
    const entry = kv.get("flow.get", id);
    return entry?.value === undefined
      ? undefined
      : { record: decodeFlowRecord(entry.value), revision: entry.revision };
  },
  updateFlow: async (record, revision) => {
    open("flow.update");
    const body = encodeFlowRecord(record);
    fits("flow.update", body);
    return kv.update("flow.update", record.id, body, revision);
  },
  markLive: async (id, at) => {
    open("flow.mark");
    kv.put("flow.mark", `${live}${id}`, JSON.stringify({ v: 1, at }));
  },
  listLive: async () => {
    open("flow.marks");
    return kv.live().flatMap((entry) =>
      entry.key.startsWith(live) && entry.value !== undefined
        ? [
            {
              id: entry.key.slice(live.length),
              revision: entry.revision,
              markedAt: (JSON.parse(entry.value) as { at: number }).at,
            },
          ]
        : [],
    );
  },
  unmarkLive: async (id, revision) => {
    open("flow.unmark");
    kv.erase("flow.unmark", `${live}${id}`, revision);
  },
  listFlows: async () => {
    open("flow.list");
    return kv.live().flatMap((entry) => {
      const record = entry.key.startsWith(live) ? undefined : decodeFlowIfReadable(entry.value as string);
      return record ? [{ record, revision: entry.revision }] : [];
    });
  },
  removeFlow: async (id, revision) => {
    open("flow.remove");
    if (kv.get("flow.remove", id)?.revision !== revision) return false;
    kv.erase("flow.remove", id);
    return true;
  },
});
