/**
 * A 3-node nats-server cluster on loopback, for the chaos suite (test/chaos/)
 * and its own harness test: JetStream on every node (a `server_name` each, a
 * common cluster name, routes between all three), each node with its own
 * temporary store dir and random client, route and monitoring ports.
 *
 * The binary only (NATS_SERVER_BIN, PATH, /usr/sbin, /usr/bin, as for a single
 * server): the faults are signals to real processes. Every node is SIGKILLed
 * and every store dir removed when the test process exits, as for a single
 * server (nats-process.ts).
 *
 * A node can be killed (SIGKILL), stopped (SIGTERM), restarted on the same
 * ports and store, restarted with its store wiped, and paused / resumed
 * (SIGSTOP / SIGCONT). Restarted nodes route to the other two again, so the
 * cluster heals by itself.
 */
import { randomBytes } from "node:crypto";
import {
  emptyStoreDir,
  findNatsServerBinary,
  freePort,
  httpGetJson,
  INSTALL_HINT,
  type LaunchOptions,
  launch,
  makeStoreDir,
  relaunch,
  removeStoreDir,
  type ServerProcess,
  StartupError,
} from "./nats-process.ts";
import { waitUntil } from "./wait.ts";

export interface ClusterNode {
  /** The node's `server_name` (n1, n2, n3): what /jsz and stream infos call it. */
  readonly name: string;
  /** nats://127.0.0.1:<client port>, the same across restarts. */
  readonly url: string;
  readonly monitorUrl: string;
  readonly storeDir: string;
  /** The process is alive (a paused one is alive). */
  readonly running: boolean;
  readonly paused: boolean;
  /** SIGKILL and wait for the exit; the store is kept. */
  kill(): Promise<void>;
  /** SIGTERM (SIGKILL after 10 s) and wait for the exit; the store is kept. Idempotent. */
  stop(): Promise<void>;
  /** Stops the node if it runs, then starts it on the same ports and store; resolves once it accepts clients with JetStream on. */
  restart(): Promise<void>;
  /** As restart(), with the store dir emptied first: the node comes back knowing nothing. */
  restartEmpty(): Promise<void>;
  /** SIGSTOP: the process holds its sockets but answers nothing. */
  pause(): void;
  /** SIGCONT after pause(). */
  resume(): void;
  /** Resolves once the node's /healthz is ok: it sees the meta leader and every stream and consumer it holds is current. */
  waitHealthy(timeoutMs?: number): Promise<void>;
  /** Names of the client connections the node has now (/connz). */
  connectionNames(): Promise<string[]>;
  /** The JetStream meta leader as this node sees it (/jsz); undefined while it sees none. */
  metaLeader(): Promise<string | undefined>;
}

export interface NatsCluster {
  readonly name: string;
  readonly nodes: readonly ClusterNode[];
  /** Every node's client URL, for a client's `servers`. */
  readonly urls: string[];
  /** The node named `name`; throws for an unknown name. */
  node(name: string): ClusterNode;
  /** The JetStream meta leader's name as a running node sees it; undefined while there is none. */
  metaLeader(): Promise<string | undefined>;
  /** The name of the node leading `stream` (`cluster.leader` in /jsz), undefined while there is none. */
  streamLeader(stream: string): Promise<string | undefined>;
  /** The node a client connection named `connectionName` is connected to, if any. */
  nodeServing(connectionName: string): Promise<ClusterNode | undefined>;
  /** Stops every node and removes every store dir; idempotent. */
  dispose(): Promise<void>;
}

export interface StartClusterOptions {
  /** Nodes in the cluster (default 3). */
  readonly size?: number;
  /** How long to wait for a JetStream meta leader (default 30 s). */
  readonly metaLeaderTimeoutMs?: number;
}

const HEALTHY_TIMEOUT_MS = 30_000;
const START_ATTEMPTS = 3;

/** What a node is started with; kept for its restarts. */
interface NodePlan {
  readonly name: string;
  readonly clusterPort: number;
  readonly storeDir: string;
}

class Node implements ClusterNode {
  readonly url: string;
  readonly monitorUrl: string;
  #paused = false;

  constructor(
    private readonly bin: string,
    private readonly options: LaunchOptions,
    private readonly plan: NodePlan,
    private readonly port: number,
    private readonly monitorPort: number,
    private proc: ServerProcess,
  ) {
    this.url = `nats://127.0.0.1:${port}`;
    this.monitorUrl = `http://127.0.0.1:${monitorPort}`;
  }

  get name(): string {
    return this.plan.name;
  }
  get storeDir(): string {
    return this.plan.storeDir;
  }
  get running(): boolean {
    return this.proc.running;
  }
  get paused(): boolean {
    return this.#paused;
  }

  kill(): Promise<void> {
    this.#paused = false; // SIGKILL ends a stopped process too
    return this.proc.terminate("SIGKILL");
  }

  stop(): Promise<void> {
    // A stopped process keeps a SIGTERM pending until it runs again.
    if (this.#paused) this.resume();
    return this.proc.terminate("SIGTERM");
  }

  async restart(): Promise<void> {
    await this.stop();
    this.proc = await relaunch(this.bin, this.options, this.storeDir, {
      port: this.port,
      monitorPort: this.monitorPort,
    });
  }

  async restartEmpty(): Promise<void> {
    await this.stop();
    await emptyStoreDir(this.storeDir);
    await this.restart();
  }

  pause(): void {
    this.#signal("SIGSTOP");
    this.#paused = true;
  }

  resume(): void {
    this.#signal("SIGCONT");
    this.#paused = false;
  }

  waitHealthy(timeoutMs = HEALTHY_TIMEOUT_MS): Promise<void> {
    return waitUntil(
      async () => ((await httpGetJson(`${this.monitorUrl}/healthz`)) as { status?: unknown }).status === "ok",
      { timeoutMs, intervalMs: 100, message: `node ${this.name}: /healthz ok` },
    );
  }

  async connectionNames(): Promise<string[]> {
    const connz = (await httpGetJson(`${this.monitorUrl}/connz?limit=1024`)) as {
      connections?: Array<{ name?: string }>;
    };
    return (connz.connections ?? []).map((c) => c.name ?? "");
  }

  async metaLeader(): Promise<string | undefined> {
    const jsz = (await httpGetJson(`${this.monitorUrl}/jsz`)) as { meta_cluster?: { leader?: string } };
    const leader = jsz.meta_cluster?.leader;
    return leader === undefined || leader === "" ? undefined : leader;
  }

  /** Whether the monitoring endpoint can answer now (a paused or dead node cannot). */
  get answering(): boolean {
    return this.running && !this.#paused;
  }

  #signal(signal: "SIGSTOP" | "SIGCONT"): void {
    if (!this.running) throw new Error(`node ${this.name} is not running: cannot ${signal} it`);
    this.proc.child.kill(signal);
  }
}

/** Starts the cluster and resolves once JetStream has a meta leader. */
export async function startNatsCluster(options: StartClusterOptions = {}): Promise<NatsCluster> {
  const bin = await findNatsServerBinary();
  if (bin === undefined) throw new Error(`the cluster harness needs the nats-server binary; ${INSTALL_HINT}`);
  for (let attempt = 1; ; attempt++) {
    try {
      const cluster = await startNodes(bin, options.size ?? 3);
      try {
        await waitForMetaLeader(cluster, options.metaLeaderTimeoutMs ?? 30_000);
      } catch (err) {
        await cluster.dispose();
        throw err;
      }
      return cluster;
    } catch (err) {
      // The route ports are picked free before the nodes bind them: another process may
      // take one meanwhile. Pick new ones.
      if (!(err instanceof StartupError && err.addressInUse) || attempt === START_ATTEMPTS) throw err;
    }
  }
}

async function startNodes(bin: string, size: number): Promise<Cluster> {
  const clusterName = `jetstate-chaos-${randomBytes(3).toString("hex")}`;
  const plans: NodePlan[] = [];
  for (let n = 1; n <= size; n++) {
    plans.push({ name: `n${n}`, clusterPort: await freePort(), storeDir: await makeStoreDir() });
  }
  // Every node routes to all of them (itself included: the server ignores a route to itself),
  // so a restarted node finds the others whichever it is.
  const routes = plans.map((p) => `nats://127.0.0.1:${p.clusterPort}`).join(",");
  const optionsOf = (plan: NodePlan): LaunchOptions => ({
    jetstream: true,
    args: [
      "--server_name",
      plan.name,
      "--cluster_name",
      clusterName,
      "--cluster",
      `nats://127.0.0.1:${plan.clusterPort}`,
      "--routes",
      routes,
    ],
  });
  const started = await Promise.allSettled(
    plans.map(async (plan) => {
      const opts = optionsOf(plan);
      const { proc, port, monitorPort } = await launch(bin, opts, plan.storeDir, undefined);
      return new Node(bin, opts, plan, port, monitorPort, proc);
    }),
  );
  const nodes = started.flatMap((s) => (s.status === "fulfilled" ? [s.value] : []));
  const cluster = new Cluster(clusterName, nodes, plans);
  const failed = started.find((s) => s.status === "rejected");
  if (failed !== undefined) {
    await cluster.dispose();
    throw failed.reason;
  }
  return cluster;
}

class Cluster implements NatsCluster {
  #disposed = false;

  constructor(
    readonly name: string,
    readonly nodes: readonly Node[],
    private readonly plans: readonly NodePlan[],
  ) {}

  get urls(): string[] {
    return this.nodes.map((n) => n.url);
  }

  node(name: string): ClusterNode {
    const found = this.nodes.find((n) => n.name === name);
    if (found === undefined) throw new Error(`no node ${name} in cluster ${this.name}`);
    return found;
  }

  async metaLeader(): Promise<string | undefined> {
    for (const node of this.#answering()) {
      // A node going down under the query is not an answer: ask the next.
      const leader = await node.metaLeader().catch(() => undefined);
      if (leader !== undefined) return leader;
    }
    return undefined;
  }

  async streamLeader(stream: string): Promise<string | undefined> {
    for (const node of this.#answering()) {
      const jsz = (await httpGetJson(`${node.monitorUrl}/jsz?accounts=true&streams=true`).catch(
        () => undefined,
      )) as JszStreams | undefined;
      for (const account of jsz?.account_details ?? []) {
        const found = account.stream_detail?.find((s) => s.name === stream);
        const leader = found?.cluster?.leader;
        if (leader !== undefined && leader !== "") return leader;
      }
    }
    return undefined;
  }

  async nodeServing(connectionName: string): Promise<ClusterNode | undefined> {
    for (const node of this.#answering()) {
      if ((await node.connectionNames()).includes(connectionName)) return node;
    }
    return undefined;
  }

  async dispose(): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    // Killed, not drained: nothing of a disposed cluster is kept.
    await Promise.all(this.nodes.map((n) => n.kill()));
    await Promise.all(this.plans.map((p) => removeStoreDir(p.storeDir)));
  }

  #answering(): Node[] {
    return this.nodes.filter((n) => n.answering);
  }
}

/** The part of `/jsz?accounts=true&streams=true` read here. */
interface JszStreams {
  account_details?: Array<{
    stream_detail?: Array<{ name?: string; cluster?: { leader?: string } }>;
  }>;
}

/** Every running node sees the same meta leader: a stream of R3 can be placed. */
async function waitForMetaLeader(cluster: Cluster, timeoutMs: number): Promise<void> {
  await waitUntil(
    async () => {
      const seen = await Promise.all(cluster.nodes.map((n) => n.metaLeader()));
      return seen.every((leader) => leader !== undefined && leader === seen[0]);
    },
    {
      timeoutMs,
      intervalMs: 50,
      message: `cluster ${cluster.name}: a JetStream meta leader every node sees`,
    },
  );
}
