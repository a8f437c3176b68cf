import type { Clock } from "../../kernel/clock.ts";
import type { Presence } from "../presence.ts";
import type { MemoryKv } from "./memory-kv.ts";

/**
 * Presence in the memory server's bucket: every runtime sharing the server
 * sees every worker. Each key holds the announcement with the server clock's
 * time of the write, as a NATS KV message carries the server's timestamp.
 */
export const memoryPresence = (kv: MemoryKv, clock: Clock, open: (operation: string) => void): Presence => ({
  announce: async (key, value) => {
    open("presence.announce");
    kv.put("presence.announce", key, JSON.stringify({ storedAt: clock.now(), value }));
  },
  withdraw: async (key) => {
    open("presence.withdraw");
    kv.purge("presence.withdraw", key);
  },
  list: async () => {
    open("presence.list");
    return kv
      .live()
      .flatMap((entry) =>
        entry.value === undefined ? [] : [JSON.parse(entry.value) as { value: string; storedAt: number }],
      );
  },
});
