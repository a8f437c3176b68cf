import type { Presence } from "../presence.ts";
import type { MemoryKv } from "./memory-kv.ts";

/** Presence in the memory server's bucket: every runtime sharing the server sees every worker. */
export const memoryPresence = (kv: MemoryKv, open: (operation: string) => void): Presence => ({
  announce: async (key, value) => {
    open("presence.announce");
    kv.put("presence.announce", key, value);
  },
  withdraw: async (key) => {
    open("presence.withdraw");
    kv.purge("presence.withdraw", key);
  },
  list: async () => {
    open("presence.list");
    return kv.live().flatMap((entry) => (entry.value === undefined ? [] : [entry.value]));
  },
});
