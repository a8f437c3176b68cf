/**
 * What every nats-server the tests start has in common, whether alone
 * (nats-server.ts) or in a cluster (nats-cluster.ts): finding the binary,
 * spawning it and waiting until it is ready (ports read from its ports file),
 * the monitoring endpoints, and the leftovers hook that SIGKILLs every server
 * and removes every store dir still there when the test process exits.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { constants, rmSync } from "node:fs";
import { access, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import http from "node:http";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { delay, waitUntil } from "./wait.ts";

export const INSTALL_HINT =
  "jetstate tests need nats-server: apt-get install -y nats-server (or a Docker engine for @testcontainers/nats)";
export const STARTUP_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 10_000;
const HTTP_TIMEOUT_MS = 2_000;

/** How a nats-server is started: JetStream on or off, and any further arguments. */
export interface LaunchOptions {
  readonly jetstream: boolean;
  readonly args: readonly string[];
}

// ---------------------------------------------------------------------------
// Finding the binary

async function isExecutable(file: string): Promise<boolean> {
  try {
    await access(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** NATS_SERVER_BIN, then PATH, then /usr/sbin and /usr/bin (Debian puts it in /usr/sbin). */
export async function findNatsServerBinary(): Promise<string | undefined> {
  const fromEnv = process.env.NATS_SERVER_BIN;
  if (fromEnv !== undefined && fromEnv !== "") {
    if (await isExecutable(fromEnv)) return fromEnv;
    throw new Error(`NATS_SERVER_BIN=${fromEnv} is not an executable file`);
  }
  const dirs = (process.env.PATH ?? "").split(path.delimiter).filter((d) => d !== "");
  for (const dir of [...dirs, "/usr/sbin", "/usr/bin"]) {
    const candidate = path.join(dir, "nats-server");
    if (await isExecutable(candidate)) return candidate;
  }
  return undefined;
}

// ---------------------------------------------------------------------------
// Small helpers: HTTP without keep-alive (no sockets left in a pool), TCP probe

export function httpGetJson(url: string): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false, headers: { connection: "close" } }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        body += chunk;
      });
      res.on("end", () => {
        if (res.statusCode !== 200) {
          reject(new Error(`GET ${url}: HTTP ${res.statusCode}: ${body.slice(0, 200)}`));
          return;
        }
        try {
          resolve(JSON.parse(body));
        } catch (err) {
          reject(new Error(`GET ${url}: invalid JSON: ${String(err)}`));
        }
      });
      res.on("error", reject);
    });
    req.setTimeout(HTTP_TIMEOUT_MS, () => req.destroy(new Error(`GET ${url}: timed out`)));
    req.on("error", reject);
  });
}

export function tcpAccepts(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (ok: boolean) => {
      socket.removeAllListeners();
      socket.on("error", () => {});
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(HTTP_TIMEOUT_MS, () => done(false));
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
  });
}

export async function monitorConnectionCount(monitorUrl: string): Promise<number> {
  const connz = (await httpGetJson(`${monitorUrl}/connz`)) as { num_connections?: unknown };
  if (typeof connz.num_connections !== "number") throw new Error("/connz has no num_connections");
  return connz.num_connections;
}

export async function monitorVersion(monitorUrl: string): Promise<string> {
  const varz = (await httpGetJson(`${monitorUrl}/varz`)) as { version?: unknown };
  if (typeof varz.version !== "string") throw new Error("/varz has no version");
  return varz.version;
}

/** True once the client port accepts TCP and /healthz says ok (with JetStream when enabled). */
export async function serverReady(
  host: string,
  port: number,
  monitorUrl: string,
  jetstream: boolean,
): Promise<boolean> {
  if (!(await tcpAccepts(host, port))) return false;
  const health = (await httpGetJson(`${monitorUrl}/healthz${jetstream ? "?js-enabled-only=true" : ""}`)) as {
    status?: unknown;
  };
  return health.status === "ok";
}

/** Keeps the last lines written by a server, for error messages. */
export class LogTail {
  private lines: string[] = [];
  private partial = "";
  constructor(private readonly max = 40) {}
  push(chunk: string): void {
    const parts = (this.partial + chunk).split("\n");
    this.partial = parts.pop() ?? "";
    this.lines.push(...parts);
    if (this.lines.length > this.max) this.lines.splice(0, this.lines.length - this.max);
  }
  text(): string {
    return [...this.lines, this.partial].filter((l) => l !== "").join("\n");
  }
}

// ---------------------------------------------------------------------------
// Leftovers: when this process exits, SIGKILL every server still running and remove
// the store dirs of handles that were never disposed.

const liveChildren = new Set<ChildProcess>();
const liveDirs = new Set<string>();
let exitHookInstalled = false;
const onProcessExit = (): void => {
  for (const child of liveChildren) child.kill("SIGKILL");
  for (const dir of liveDirs) {
    try {
      rmSync(dir, { recursive: true, force: true });
    } catch {
      // best effort: the process is going away
    }
  }
};
function syncExitHook(): void {
  const needed = liveChildren.size > 0 || liveDirs.size > 0;
  if (needed && !exitHookInstalled) process.on("exit", onProcessExit);
  if (!needed && exitHookInstalled) process.off("exit", onProcessExit);
  exitHookInstalled = needed;
}
function track(child: ChildProcess): void {
  liveChildren.add(child);
  syncExitHook();
}
function untrack(child: ChildProcess): void {
  liveChildren.delete(child);
  syncExitHook();
}
export async function makeStoreDir(): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), "jetstate-nats-"));
  liveDirs.add(dir);
  syncExitHook();
  return dir;
}
/** Removes everything in the store dir, keeping the dir itself (a bind mount in container mode). */
export async function emptyStoreDir(dir: string): Promise<void> {
  for (const entry of await readdir(dir)) await rm(path.join(dir, entry), { recursive: true, force: true });
}
export async function removeStoreDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
  liveDirs.delete(dir);
  syncExitHook();
}

// ---------------------------------------------------------------------------
// Binary mode

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  error?: Error;
}

/** One run of the nats-server process. */
export class ServerProcess {
  readonly child: ChildProcess;
  readonly log = new LogTail();
  exit: Exit | undefined;
  readonly exited: Promise<Exit>;

  constructor(bin: string, args: string[]) {
    this.child = spawn(bin, args, { stdio: ["ignore", "ignore", "pipe"] });
    track(this.child);
    this.child.stderr?.setEncoding("utf8");
    this.child.stderr?.on("data", (chunk: string) => this.log.push(chunk));
    this.exited = new Promise<Exit>((resolve) => {
      const finish = (exit: Exit) => {
        if (this.exit !== undefined) return;
        this.exit = exit;
        untrack(this.child);
        this.child.removeAllListeners();
        this.child.stderr?.removeAllListeners();
        this.child.stderr?.destroy();
        resolve(exit);
      };
      // "close" comes after stderr is drained, so the log tail is complete.
      this.child.once("close", (code, signal) => finish({ code, signal }));
      this.child.once("error", (error) => finish({ code: null, signal: null, error }));
    });
  }

  get running(): boolean {
    return this.exit === undefined;
  }

  describeExit(): string {
    const e = this.exit;
    if (e === undefined) return "still running";
    if (e.error !== undefined) return `failed to spawn: ${e.error.message}`;
    return e.signal !== null ? `killed by ${e.signal}` : `exited with code ${e.code}`;
  }

  /** Sends `signal` and waits for the exit; SIGKILL if SIGTERM is not enough in time. */
  async terminate(signal: "SIGTERM" | "SIGKILL"): Promise<void> {
    if (!this.running) return;
    this.child.kill(signal);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), STOP_TIMEOUT_MS);
    });
    const first = await Promise.race([this.exited, timedOut]);
    clearTimeout(timer);
    if (first === "timeout") {
      this.child.kill("SIGKILL");
      await this.exited;
    }
  }
}

export class StartupError extends Error {
  constructor(
    message: string,
    readonly addressInUse: boolean,
  ) {
    super(message);
  }
}

/**
 * Spawns nats-server and resolves when it accepts TCP connections and /healthz is ok.
 * With `fixed` undefined the ports are random and read from the ports file.
 */
export async function launch(
  bin: string,
  options: LaunchOptions,
  dir: string,
  fixed: { port: number; monitorPort: number } | undefined,
): Promise<{ proc: ServerProcess; port: number; monitorPort: number }> {
  const args = ["-a", "127.0.0.1", "-p", String(fixed?.port ?? -1), "-m", String(fixed?.monitorPort ?? -1)];
  if (options.jetstream) args.push("-js");
  args.push("-sd", dir, "--ports_file_dir", dir, ...options.args);
  const proc = new ServerProcess(bin, args);
  const portsFile = path.join(dir, `nats-server_${proc.child.pid}.ports`);
  let ports: { port: number; monitorPort: number } | undefined;
  try {
    // The predicate also returns true when the process died, so a failed start is
    // reported at once instead of at the deadline.
    await waitUntil(
      async () => {
        if (!proc.running) return true;
        ports ??= await readPortsFile(portsFile);
        if (ports === undefined) return false;
        return serverReady(
          "127.0.0.1",
          ports.port,
          `http://127.0.0.1:${ports.monitorPort}`,
          options.jetstream,
        );
      },
      { timeoutMs: STARTUP_TIMEOUT_MS, intervalMs: 25, message: `nats-server ${args.join(" ")} to be ready` },
    );
  } catch (err) {
    await proc.terminate("SIGKILL");
    throw new StartupError(
      `${(err as Error).message}\n--- nats-server stderr (tail) ---\n${proc.log.text()}`,
      false,
    );
  }
  if (!proc.running || ports === undefined) {
    await proc.exited;
    const log = proc.log.text();
    throw new StartupError(
      `nats-server ${args.join(" ")} ${proc.describeExit()} before it was ready\n--- nats-server stderr (tail) ---\n${log}`,
      log.includes("address already in use"),
    );
  }
  return { proc, ...ports };
}

/** Parses `nats-server_<pid>.ports`: {"nats":["nats://h:p"],"monitoring":["http://h:p"]}; undefined if absent or partial. */
async function readPortsFile(file: string): Promise<{ port: number; monitorPort: number } | undefined> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch {
    return undefined;
  }
  try {
    const json = JSON.parse(text) as { nats?: string[]; monitoring?: string[] };
    const nats = json.nats?.[0];
    const monitoring = json.monitoring?.[0];
    if (nats === undefined || monitoring === undefined) return undefined;
    return { port: Number(new URL(nats).port), monitorPort: Number(new URL(monitoring).port) };
  } catch {
    return undefined; // written but not complete yet
  }
}

// ---------------------------------------------------------------------------
// Ports

/** A free TCP port on this host, to bind the container's ports to fixed host ports (kept across restarts). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => {
        if (typeof address === "object" && address !== null) resolve(address.port);
        else reject(new Error("could not get a free port"));
      });
    });
  });
}

/**
 * `launch` on fixed ports (a restart): the ports just freed can be taken for a
 * moment (TIME_WAIT, another test's random port), so an "address already in
 * use" is tried again until the startup deadline.
 */
export async function relaunch(
  bin: string,
  options: LaunchOptions,
  dir: string,
  fixed: { port: number; monitorPort: number },
): Promise<ServerProcess> {
  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  for (;;) {
    try {
      return (await launch(bin, options, dir, fixed)).proc;
    } catch (err) {
      if (!(err instanceof StartupError && err.addressInUse) || Date.now() >= deadline) throw err;
      await delay(50);
    }
  }
}

/**
 * An address nothing listens on for as long as the caller holds it, for the
 * tests of an unreachable server. A port `freePort()` found free may be taken
 * by another test's server before it is dialled; this one cannot: the port is
 * held by a listener on 127.0.0.1, and the address given is 127.0.0.2 (same
 * loopback, no listener there), which refuses every connection
 * (ECONNREFUSED) until `release()`.
 */
export async function closedAddress(): Promise<{ host: string; port: number; release: () => Promise<void> }> {
  const holder = net.createServer();
  await new Promise<void>((resolve, reject) => {
    holder.once("error", reject);
    holder.listen(0, "127.0.0.1", () => resolve());
  });
  const address = holder.address();
  if (typeof address !== "object" || address === null) throw new Error("could not hold a port");
  return {
    host: "127.0.0.2",
    port: address.port,
    release: () => new Promise<void>((resolve) => holder.close(() => resolve())),
  };
}
