/**
 * A real nats-server for integration tests: a local `nats-server` binary when
 * there is one (fast, and kill/restart are real signals), else a container
 * through @testcontainers/nats when a container runtime answers.
 *
 * Every server gets its own temporary store dir and random ports; restart()
 * comes back on the same client port with the same store, so a client that
 * was connected reconnects by itself and JetStream state survives.
 *
 * Environment:
 * - NATS_SERVER_BIN: path of the nats-server binary (checked first).
 * - JETSTATE_NATS_MODE=binary|container: force one mode instead of choosing.
 * - JETSTATE_NATS_IMAGE: image for container mode (default nats:2.10-alpine).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { constants, rmSync } from "node:fs";
import { access, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import http from "node:http";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { delay, waitUntil } from "./wait.ts";

export interface NatsServerHandle {
  readonly url: string; // nats://127.0.0.1:<port>
  readonly port: number;
  readonly monitorUrl: string; // http://127.0.0.1:<monitorPort>
  readonly storeDir: string;
  readonly kind: "binary" | "container";
  /** Number of client connections the server currently has (GET /connz num_connections). */
  connectionCount(): Promise<number>;
  /** server version string, e.g. "2.9.10" (from /varz) */
  version(): Promise<string>;
  stop(): Promise<void>; // SIGTERM, wait for exit; idempotent
  kill(): Promise<void>; // SIGKILL, wait for exit (store kept)
  restart(options?: RestartOptions): Promise<void>; // start again on the SAME client port and SAME store dir; resolves when it accepts TCP connections and JetStream is ready (/jsz or /healthz ok)
  /**
   * Stops the server, empties its store dir (a lost disk, a new node in its
   * place) and starts it again on the SAME client port: clients reconnect to
   * a server that has no stream, consumer or bucket.
   */
  restartEmpty(): Promise<void>;
  /** stop + remove the temporary store dir; idempotent */
  dispose(): Promise<void>;
}

export interface RestartOptions {
  /**
   * false: this run without JetStream (clients connect, every JetStream call
   * gets no answer: like a cluster between two stream leaders). Binary mode
   * only. Default: as started.
   */
  jetstream?: boolean;
}

export interface StartOptions {
  jetstream?: boolean /* default true */;
  args?: string[];
}

const INSTALL_HINT =
  "jetstate tests need nats-server: apt-get install -y nats-server (or a Docker engine for @testcontainers/nats)";
const STARTUP_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 10_000;
const HTTP_TIMEOUT_MS = 2_000;
const DEFAULT_IMAGE = "nats:2.10-alpine";

export async function startNatsServer(options: StartOptions = {}): Promise<NatsServerHandle> {
  const mode = process.env.JETSTATE_NATS_MODE;
  if (mode !== undefined && mode !== "" && mode !== "binary" && mode !== "container") {
    throw new Error(`JETSTATE_NATS_MODE must be "binary" or "container", not ${JSON.stringify(mode)}`);
  }
  if (mode !== "container") {
    const bin = await findNatsServerBinary();
    if (bin !== undefined) return BinaryServer.start(bin, options);
    if (mode === "binary") throw new Error(INSTALL_HINT);
  }
  if (await containerRuntimeAnswers()) return startContainerServer(options);
  throw new Error(INSTALL_HINT);
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
async function findNatsServerBinary(): Promise<string | undefined> {
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

function httpGetJson(url: string): Promise<unknown> {
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

function tcpAccepts(host: string, port: number): Promise<boolean> {
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

async function monitorConnectionCount(monitorUrl: string): Promise<number> {
  const connz = (await httpGetJson(`${monitorUrl}/connz`)) as { num_connections?: unknown };
  if (typeof connz.num_connections !== "number") throw new Error("/connz has no num_connections");
  return connz.num_connections;
}

async function monitorVersion(monitorUrl: string): Promise<string> {
  const varz = (await httpGetJson(`${monitorUrl}/varz`)) as { version?: unknown };
  if (typeof varz.version !== "string") throw new Error("/varz has no version");
  return varz.version;
}

/** True once the client port accepts TCP and /healthz says ok (with JetStream when enabled). */
async function serverReady(
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
class LogTail {
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
async function makeStoreDir(): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), "jetstate-nats-"));
  liveDirs.add(dir);
  syncExitHook();
  return dir;
}
/** Removes everything in the store dir, keeping the dir itself (a bind mount in container mode). */
async function emptyStoreDir(dir: string): Promise<void> {
  for (const entry of await readdir(dir)) await rm(path.join(dir, entry), { recursive: true, force: true });
}
async function removeStoreDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
  liveDirs.delete(dir);
  syncExitHook();
}

// ---------------------------------------------------------------------------
// Binary mode

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  error?: Error;
}

/** One run of the nats-server process. */
class ServerProcess {
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

class StartupError extends Error {
  constructor(
    message: string,
    readonly addressInUse: boolean,
  ) {
    super(message);
  }
}

class BinaryServer implements NatsServerHandle {
  readonly kind = "binary" as const;
  readonly url: string;
  readonly monitorUrl: string;
  private disposed = false;

  private constructor(
    private readonly bin: string,
    private readonly options: Required<StartOptions>,
    readonly storeDir: string,
    readonly port: number,
    private readonly monitorPort: number,
    private proc: ServerProcess,
  ) {
    this.url = `nats://127.0.0.1:${port}`;
    this.monitorUrl = `http://127.0.0.1:${monitorPort}`;
  }

  static async start(bin: string, options: StartOptions): Promise<BinaryServer> {
    const opts: Required<StartOptions> = { jetstream: options.jetstream ?? true, args: options.args ?? [] };
    const dir = await makeStoreDir();
    try {
      const { proc, port, monitorPort } = await launch(bin, opts, dir, undefined);
      return new BinaryServer(bin, opts, dir, port, monitorPort, proc);
    } catch (err) {
      await removeStoreDir(dir);
      throw err;
    }
  }

  connectionCount(): Promise<number> {
    return monitorConnectionCount(this.monitorUrl);
  }

  version(): Promise<string> {
    return monitorVersion(this.monitorUrl);
  }

  stop(): Promise<void> {
    return this.proc.terminate("SIGTERM");
  }

  kill(): Promise<void> {
    return this.proc.terminate("SIGKILL");
  }

  async restart(options: RestartOptions = {}): Promise<void> {
    if (this.disposed) throw new Error("nats-server handle was disposed; start a new one");
    await this.stop();
    const fixed = { port: this.port, monitorPort: this.monitorPort };
    const runOptions = { ...this.options, jetstream: options.jetstream ?? this.options.jetstream };
    const deadline = Date.now() + STARTUP_TIMEOUT_MS;
    for (;;) {
      try {
        this.proc = (await launch(this.bin, runOptions, this.storeDir, fixed)).proc;
        return;
      } catch (err) {
        // The port we just freed can be taken for a moment (TIME_WAIT, another test's
        // random port): try again until the deadline.
        if (!(err instanceof StartupError && err.addressInUse) || Date.now() >= deadline) throw err;
        await delay(50);
      }
    }
  }

  async restartEmpty(): Promise<void> {
    if (this.disposed) throw new Error("nats-server handle was disposed; start a new one");
    await this.stop();
    await emptyStoreDir(this.storeDir);
    await this.restart();
  }

  async dispose(): Promise<void> {
    this.disposed = true;
    await this.stop();
    await removeStoreDir(this.storeDir);
  }
}

/**
 * Spawns nats-server and resolves when it accepts TCP connections and /healthz is ok.
 * With `fixed` undefined the ports are random and read from the ports file.
 */
async function launch(
  bin: string,
  options: Required<StartOptions>,
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
// Container mode (not exercised on machines without a container engine)

async function containerRuntimeAnswers(): Promise<boolean> {
  try {
    const { getContainerRuntimeClient } = await import("testcontainers");
    await getContainerRuntimeClient();
    return true;
  } catch {
    return false;
  }
}

/** A free TCP port on this host, to bind the container's ports to fixed host ports (kept across restarts). */
function freePort(): Promise<number> {
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

/** ["--max_payload", "1MB", "-DV"] -> [["--max_payload", "1MB"], ["-DV"]] for NatsContainer.withArg. */
function argPairs(args: string[]): Array<[name: string, value?: string]> {
  const pairs: Array<[name: string, value?: string]> = [];
  for (let i = 0; i < args.length; i++) {
    const name = args[i]!;
    const value = args[i + 1];
    if (value !== undefined && !value.startsWith("-")) {
      pairs.push([name, value]);
      i++;
    } else {
      pairs.push([name]);
    }
  }
  return pairs;
}

async function startContainerServer(options: StartOptions): Promise<NatsServerHandle> {
  const { getContainerRuntimeClient } = await import("testcontainers");
  const { NatsContainer } = await import("@testcontainers/nats");
  const jetstream = options.jetstream ?? true;

  // NatsContainer always adds --user test --pass test; nats.js ignores credentials in
  // a server URL, so strip them to keep `connect({ servers: url })` working.
  class OpenNatsContainer extends NatsContainer {
    override withCommand(command: string[]): this {
      const kept: string[] = [];
      for (let i = 0; i < command.length; i++) {
        if (command[i] === "--user" || command[i] === "--pass") i++;
        else kept.push(command[i]!);
      }
      return super.withCommand(kept);
    }
  }

  const storeDir = await makeStoreDir();
  const hostPort = await freePort();
  const hostMonitorPort = await freePort();
  let container = new OpenNatsContainer(process.env.JETSTATE_NATS_IMAGE || DEFAULT_IMAGE)
    .withArg("-m", "8222")
    .withArg("-sd", "/data")
    .withBindMounts([{ source: storeDir, target: "/data", mode: "rw" }])
    // Fixed host ports: a restarted container keeps them, so clients reconnect.
    .withExposedPorts({ container: 4222, host: hostPort }, { container: 8222, host: hostMonitorPort });
  if (jetstream) container = container.withJetStream();
  for (const [name, value] of argPairs(options.args ?? [])) {
    container = value === undefined ? container.withArg(name) : container.withArg(name, value);
  }
  // Files in the store dir belong to us, so dispose() can remove them.
  if (process.getuid !== undefined && process.getgid !== undefined) {
    container = container.withUser(`${process.getuid()}:${process.getgid()}`);
  }

  let started: Awaited<ReturnType<typeof container.start>>;
  try {
    started = await container.start();
  } catch (err) {
    await removeStoreDir(storeDir);
    throw err;
  }
  const client = await getContainerRuntimeClient();
  const docker = client.container.getById(started.getId());
  const host = started.getHost();
  const port = started.getMappedPort(4222);
  const monitorUrl = `http://${host}:${started.getMappedPort(8222)}`;
  let running = true;
  let disposed = false;

  const waitReady = () =>
    waitUntil(() => serverReady(host, port, monitorUrl, jetstream), {
      timeoutMs: STARTUP_TIMEOUT_MS,
      message: `nats container ${started.getId().slice(0, 12)} to be ready`,
    });
  await waitReady();

  const handle: NatsServerHandle = {
    kind: "container",
    url: `nats://${host}:${port}`,
    port,
    monitorUrl,
    storeDir,
    connectionCount: () => monitorConnectionCount(monitorUrl),
    version: () => monitorVersion(monitorUrl),
    async stop() {
      if (!running) return;
      running = false;
      // SIGTERM, SIGKILL after the timeout (testcontainers takes milliseconds here).
      await client.container.stop(docker, { timeout: STOP_TIMEOUT_MS });
    },
    async kill() {
      if (!running) return;
      running = false;
      await docker.kill({ signal: "SIGKILL" });
      await docker.wait();
    },
    async restart(options: RestartOptions = {}) {
      if (disposed) throw new Error("nats container handle was disposed; start a new one");
      if (options.jetstream !== undefined && options.jetstream !== jetstream)
        throw new Error("restart({ jetstream }) needs binary mode (NATS_SERVER_BIN or nats-server on PATH)");
      await handle.stop();
      await started.restart(); // starts the stopped container: same bind mount, same host ports
      running = true;
      await waitReady();
    },
    async restartEmpty() {
      if (disposed) throw new Error("nats container handle was disposed; start a new one");
      await handle.stop();
      await emptyStoreDir(storeDir);
      await started.restart();
      running = true;
      await waitReady();
    },
    async dispose() {
      if (disposed) return;
      disposed = true;
      running = false;
      await started.stop({ timeout: STOP_TIMEOUT_MS, remove: true, removeVolumes: true });
      await removeStoreDir(storeDir);
    },
  };
  return handle;
}
