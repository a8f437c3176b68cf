import { brokerNames, queueOfStream } from "../adapters/names.ts";
import { agentsBucketFor } from "../adapters/nats/kv-agent-store.ts";
import type { NatsContext } from "../adapters/nats/nats-context.ts";
import { deniedSubjects, readServerFacts, type StreamFacts } from "../adapters/nats/server-facts.ts";
import { allRoles, natsPermissions, type Role } from "./permissions.ts";

/** One stream or bucket jetstate keeps, as found on the server. */
export interface StoreCheck {
  /** The stream's name (a bucket's stream is `KV_<bucket>`). */
  readonly name: string;
  /** The queue it belongs to, for a queue's tasks and advisories streams. */
  readonly queue?: string;
  /** null: this identity may not read it (nor list streams), so whether it exists is not known. */
  readonly present: boolean | null;
  /**
   * For a bucket made only at the first use of what it keeps (agents, queue settings, flows,
   * schedules): that use. Missing, it is not in use yet, which is no problem.
   */
  readonly firstUse?: string;
  readonly replicas?: number;
  readonly consumers?: number;
  readonly messages?: number;
}

/** Whether this identity may make the read-only API calls a role makes. */
export interface RoleCheck {
  readonly role: Role;
  /** Every probed subject of the role answered (write grants are not probed: a probe would write). */
  readonly allowed: boolean;
  readonly denied: readonly string[];
}

/** Something wrong, and what to do about it. */
export interface Problem {
  readonly what: string;
  readonly fix: string;
}

/** `rt.admin.diagnose()`: the server, jetstate's streams and buckets, this identity's roles, the clock. */
export interface Diagnosis {
  readonly server: {
    readonly name?: string;
    readonly version?: string;
    readonly cluster?: string;
    readonly jetstream: boolean;
  };
  /** Replicas this runtime asks for (`replicas`, `JETSTATE_REPLICAS`). */
  readonly replicasWanted: number;
  readonly stores: readonly StoreCheck[];
  readonly roles: readonly RoleCheck[];
  /** Server time minus this host's; an error when it could not be measured. */
  readonly clock: { readonly skewMs: number; readonly roundTripMs: number } | { readonly error: string };
  readonly problems: readonly Problem[];
}

/** Beyond it, leases and stall timers of two hosts disagree by more than a renewal's margin. */
const maxSkewMs = 1000;
/** A queue name no user picks: subjects naming it are dropped when no queue exists yet. */
const noQueue = "jetstate-doctor-no-queue";
/** Stands for a wildcard token in a probed subject: any name works for a read. */
const anyToken = "jetstate-doctor";

// Not DIRECT.GET: the server does not answer a direct get without a body, so every probe would wait out its timeout.
const readOnlyApi =
  /^\$JS\.API\.(INFO|STREAM\.INFO|STREAM\.NAMES|STREAM\.LIST|CONSUMER\.INFO|CONSUMER\.NAMES|CONSUMER\.LIST|STREAM\.MSG\.GET)(\.|$)/;

const probeSubjects = (prefix: string, role: Role, queues: readonly string[]): string[] =>
  natsPermissions({ role, queues: queues.length === 0 ? [noQueue] : queues, prefix })
    .publish.allow.filter((s) => readOnlyApi.test(s) && !s.includes(noQueue))
    .map((s) =>
      s
        .split(".")
        .map((t) => (t === "*" || t === ">" ? anyToken : t))
        .join("."),
    );

/**
 * The buckets made only when what they keep is first used, by that use (or by
 * `rt.admin.provision()`): a server that never used it has none. The other stores checked
 * are made by a runtime's first job.
 */
const firstUseBuckets = (prefix: string): ReadonlyMap<string, string> => {
  const n = brokerNames(prefix);
  return new Map([
    [`KV_${agentsBucketFor(prefix)}`, "rt.agents.register()"],
    [`KV_${n.queuesBucket}`, "rt.queues, or a worker watching its queue's settings"],
    [`KV_${n.flowsBucket}`, "rt.flows.submit()"],
    [`KV_${n.schedulesBucket}`, "rt.schedules.upsert()"],
  ]);
};

export const diagnose = async (core: NatsContext, probeTimeoutMs: number): Promise<Diagnosis> => {
  const prefix = core.options.prefix;
  const n = brokerNames(prefix);
  const buckets = [n.jobsBucket, n.leasesBucket, n.presenceBucket].map((b) => `KV_${b}`);
  const firstUse = firstUseBuckets(prefix);
  const shared = [n.resultsStream, n.deadStream, ...buckets, ...firstUse.keys()];
  // Queues are found from their streams: listing first, then the probes need their names.
  const first = await readServerFacts(core, {
    streamPrefixes: [`${prefix}_`, `KV_${prefix}_`],
    expected: shared,
    clockStream: n.resultsStream,
  });
  const queues = [
    ...new Set(
      first.streams.flatMap((s) => {
        const q =
          queueOfStream(s.name, n.tasksStreamPrefix) ?? queueOfStream(s.name, n.advisoriesStreamPrefix);
        return q === undefined ? [] : [q];
      }),
    ),
  ].sort();
  const perRole = allRoles.map((role) => ({ role, subjects: probeSubjects(prefix, role, queues) }));
  const denied = new Set(
    await deniedSubjects(core, [...new Set(perRole.flatMap((r) => r.subjects))], probeTimeoutMs),
  );
  const roles = perRole.map(({ role, subjects }) => {
    const refused = subjects.filter((s) => denied.has(s));
    return { role, allowed: refused.length === 0, denied: refused };
  });
  const found = new Map(first.streams.map((s) => [s.name, s]));
  const check = (name: string, queue?: string): StoreCheck => {
    const s: StreamFacts | undefined = found.get(name);
    const use = firstUse.get(name);
    return {
      name,
      ...(queue === undefined ? {} : { queue }),
      present: s !== undefined ? true : first.unreadable.includes(name) ? null : false,
      ...(use === undefined ? {} : { firstUse: use }),
      ...(s ? { replicas: s.replicas, consumers: s.consumers, messages: s.messages } : {}),
    };
  };
  const stores = [
    ...shared.map((name) => check(name)),
    ...queues.flatMap((q) => [check(n.tasksStream(q), q), check(n.advisoriesStream(q), q)]),
  ];
  const problems: Problem[] = [];
  const { server } = first;
  if (!server.jetstream)
    problems.push({
      what: `JetStream is off on ${server.name ?? "the server"}${server.jetstreamError ? ` (${server.jetstreamError})` : ""}`,
      fix: "start nats-server with -js (or `jetstream {}` in its config), and give this account JetStream",
    });
  const replicasWanted = core.options.replicas;
  if (server.jetstream) {
    for (const s of stores) {
      // Not readable with these credentials: not known to be wrong (doctor as an admin sees it).
      if (s.present === null) continue;
      // Made by the first use of what it keeps: missing, it is not in use yet.
      if (!s.present && s.firstUse !== undefined) continue;
      if (!s.present)
        problems.push({
          what: `stream ${s.name} is missing`,
          fix: `run \`rt.admin.provision(${s.queue ? `["${s.queue}"]` : ""})\` with an admin's credentials (an admin runtime also creates it on first use)`,
        });
      else if (s.replicas !== replicasWanted)
        problems.push({
          what: `stream ${s.name} has ${s.replicas} replica(s), ${replicasWanted} wanted`,
          fix: `nats stream edit ${s.name} --replicas ${replicasWanted} (or run doctor with the JETSTATE_REPLICAS your runtimes use)`,
        });
    }
  }
  if (!roles.some((r) => r.allowed))
    problems.push({
      what: "this identity may not make the calls of any role",
      fix: "grant the permissions natsPermissions({ role, queues }) gives (docs/operations.md)",
    });
  const clock = first.clock;
  if ("skewMs" in clock && Math.abs(clock.skewMs) > maxSkewMs + clock.roundTripMs / 2)
    problems.push({
      what: `this host's clock is ${Math.abs(clock.skewMs)} ms ${clock.skewMs > 0 ? "behind" : "ahead of"} the server's`,
      fix: "sync the clocks (chrony or systemd-timesyncd): leases and stall timers compare times across hosts",
    });
  return {
    server: {
      ...(server.name === undefined ? {} : { name: server.name }),
      ...(server.version === undefined ? {} : { version: server.version }),
      ...(server.cluster === undefined ? {} : { cluster: server.cluster }),
      jetstream: server.jetstream,
    },
    replicasWanted,
    stores,
    roles,
    clock,
    problems,
  };
};
