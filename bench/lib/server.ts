/**
 * What the bench reads from its nats-server besides the harness' handle:
 * /varz counters over plain HTTP, and the server's own CPU time (Linux
 * /proc), so a run shows whether the client or the server was the limit.
 */
import { readdirSync, readFileSync } from "node:fs";
import { httpGetJson } from "../../test/harness/nats-process.ts";
import type { NatsServerHandle } from "../../test/harness/nats-server.ts";

/** A monitoring endpoint's JSON (the harness' GET: no keep-alive, a 2 s bound). */
export const getJson = async (url: string): Promise<Record<string, unknown>> =>
  (await httpGetJson(url)) as Record<string, unknown>;

/** `/varz`: `connections` (open now) and `total_connections` (accepted since start). */
export const varzConnections = async (server: NatsServerHandle): Promise<{ open: number; total: number }> => {
  const varz = await getJson(`${server.monitorUrl}/varz`);
  return { open: Number(varz.connections), total: Number(varz.total_connections) };
};

/** The nats-server pid, from the ports file the harness asks it to write into its store dir. */
export const serverPid = (server: NatsServerHandle): number | undefined => {
  try {
    const file = readdirSync(server.storeDir).find((f) => /^nats-server_\d+\.ports$/.test(f));
    return file ? Number(file.slice("nats-server_".length, -".ports".length)) : undefined;
  } catch {
    return undefined;
  }
};

const ticksPerSecond = 100; // USER_HZ on Linux

/** A function that returns the server's CPU time in µs so far; undefined off Linux or without a pid. */
export const serverCpuClock = (server: NatsServerHandle): (() => number) | undefined => {
  const pid = serverPid(server);
  return pid === undefined ? undefined : pidCpuClock(pid);
};

/** A process's CPU time in µs so far, from /proc/<pid>/stat; undefined where it cannot be read. */
export const pidCpuClock = (pid: number): (() => number) | undefined => {
  const read = () => {
    // Fields after the command name "(nats-server)", "(redis-server)": utime is the 14th field, stime the 15th.
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return ((Number(fields[11]) + Number(fields[12])) / ticksPerSecond) * 1_000_000;
  };
  try {
    read();
    return read;
  } catch {
    return undefined;
  }
};
