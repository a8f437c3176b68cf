/**
 * A server's store copied aside while it is stopped, and put back the same
 * way: the server then comes back behind what its clients had read (the
 * same streams, the writes since lost: a backup restored, a node killed
 * before it flushed them).
 */
import { cp, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type { NatsServerHandle } from "./nats-server.ts";

export interface StoreBackup {
  /** Stops the server, copies its store aside, starts it again. */
  save(): Promise<void>;
  /** Stops the server, puts the copy in its store's place, starts it again. */
  restore(): Promise<void>;
  /** Removes the copy. */
  dispose(): Promise<void>;
}

export const storeBackup = async (server: NatsServerHandle): Promise<StoreBackup> => {
  const backup = await mkdtemp(path.join(tmpdir(), "jetstate-store-backup-"));
  const copy = async (from: string, to: string) => {
    await server.stop();
    await rm(to, { recursive: true, force: true });
    await cp(from, to, { recursive: true });
    await server.restart();
  };
  return {
    save: () => copy(server.storeDir, backup),
    restore: () => copy(backup, server.storeDir),
    dispose: () => rm(backup, { recursive: true, force: true }),
  };
};
