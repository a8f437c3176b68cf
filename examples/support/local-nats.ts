import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface FoundNats {
  readonly url: string;
  readonly source: string;
  stop(): Promise<void>;
}

/**
 * For the examples: NATS at `NATS_URL` if set, else a throw-away nats-server
 * with JetStream on a random loopback port (the `nats-server` binary, e.g.
 * `apt-get install nats-server`). Throws when neither is there.
 */
export const findOrStartNats = async (): Promise<FoundNats> => {
  const found = await findNats();
  if (!found)
    throw new Error("No NATS: set NATS_URL, or install nats-server (apt-get install -y nats-server)");
  return found;
};

/** Like `findOrStartNats`, but undefined when there is no NATS to be had (the caller runs in memory). */
export const findNats = async (): Promise<FoundNats | undefined> => {
  if (process.env.NATS_URL)
    return { url: process.env.NATS_URL, source: "NATS_URL", stop: async () => undefined };
  const bin = [
    process.env.NATS_SERVER_BIN,
    "/usr/sbin/nats-server",
    "/usr/bin/nats-server",
    "/usr/local/bin/nats-server",
  ]
    .filter((p): p is string => Boolean(p))
    .find((p) => existsSync(p));
  if (!bin) return undefined;
  const dir = mkdtempSync(join(tmpdir(), "jetstate-demo-"));
  const child = spawn(bin, ["-a", "127.0.0.1", "-p", "-1", "-js", "-sd", dir, "--ports_file_dir", dir], {
    stdio: "ignore",
  });
  const deadline = Date.now() + 10_000;
  for (;;) {
    const file = readdirSync(dir).find((f) => f.endsWith(".ports"));
    if (file) {
      try {
        const ports = JSON.parse(readFileSync(join(dir, file), "utf8")) as { nats: string[] };
        const url = ports.nats[0];
        if (url) {
          return {
            url,
            source: `a local nats-server it started (${bin})`,
            stop: async () => {
              child.kill("SIGTERM");
              await new Promise((r) => child.once("exit", r));
              rmSync(dir, { recursive: true, force: true });
            },
          };
        }
      } catch {
        // the ports file is being written: read it again
      }
    }
    if (Date.now() > deadline || child.exitCode !== null) throw new Error("nats-server did not start");
    await new Promise((r) => setTimeout(r, 20));
  }
};
