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
import {
  emptyStoreDir,
  findNatsServerBinary,
  freePort,
  INSTALL_HINT,
  type LaunchOptions,
  launch,
  makeStoreDir,
  monitorConnectionCount,
  monitorVersion,
  relaunch,
  removeStoreDir,
  type ServerProcess,
  STARTUP_TIMEOUT_MS,
  serverReady,
} from "./nats-process.ts";
import { waitUntil } from "./wait.ts";

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

const STOP_TIMEOUT_MS = 10_000;
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

class BinaryServer implements NatsServerHandle {
  readonly kind = "binary" as const;
  readonly url: string;
  readonly monitorUrl: string;
  private disposed = false;

  private constructor(
    private readonly bin: string,
    private readonly options: LaunchOptions,
    readonly storeDir: string,
    readonly port: number,
    private readonly monitorPort: number,
    private proc: ServerProcess,
  ) {
    this.url = `nats://127.0.0.1:${port}`;
    this.monitorUrl = `http://127.0.0.1:${monitorPort}`;
  }

  static async start(bin: string, options: StartOptions): Promise<BinaryServer> {
    const opts: LaunchOptions = { jetstream: options.jetstream ?? true, args: options.args ?? [] };
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
    this.proc = await relaunch(this.bin, runOptions, this.storeDir, fixed);
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
