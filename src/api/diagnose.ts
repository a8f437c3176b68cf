import { brokerNames, queueOfStream } from "../adapters/names.ts";
import { agentsBucketFor } from "../adapters/nats/kv-agent-store.ts";
import type { NatsContext } from "../adapters/nats/nats-context.ts";
import { deniedSubjects, readServerFacts, type StreamFacts } from "../adapters/nats/server-facts.ts";
import { checkQueues } from "./diagnose-queues.ts";
import type { Diagnosis, Problem, RoleCheck, StoreCheck } from "./diagnosis.ts";
import { allRoles, natsPermissions, type Role } from "./permissions.ts";

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

/** A role's probes: those of every identity of it, and those naming each queue on the server. */
interface RoleProbes {
  readonly role: Role;
  readonly shared: readonly string[];
  readonly perQueue: ReadonlyMap<string, readonly string[]>;
}

const roleProbes = (prefix: string, role: Role, queues: readonly string[]): RoleProbes => {
  const shared = probeSubjects(prefix, role, []);
  const common = new Set(shared);
  const perQueue = new Map(
    queues.map((q) => [q, probeSubjects(prefix, role, [q]).filter((s) => !common.has(s))] as const),
  );
  return { role, shared, perQueue };
};

/**
 * A role's calls judged against the queues this identity is for: those of whose calls
 * for that role it may make at least one. natsPermissions grants per queue, so an admin
 * or worker of queue A is refused every call naming B, and judged on B's it would be
 * refused every role. A queue granted in part still counts, so a grant missing a call is
 * reported; the shared calls (no queue named) are judged for every identity, so one
 * granted nothing still is allowed no role.
 */
const judgeRole = (
  { role, shared, perQueue }: RoleProbes,
  denied: ReadonlySet<string>,
  meantQueues?: ReadonlySet<string>,
): RoleCheck => {
  const mine = [...perQueue].filter(([q, subjects]) =>
    meantQueues ? meantQueues.has(q) : subjects.some((s) => !denied.has(s)),
  );
  const refused = [...shared, ...mine.flatMap(([, subjects]) => subjects)].filter((s) => denied.has(s));
  return { role, allowed: refused.length === 0, denied: refused, queues: mine.map(([q]) => q) };
};

/**
 * The buckets made only when what they keep is first used, by that use (or by
 * `rt.admin.provision()`): a server that never used it has none. The other stores checked
 * are made by a runtime's first job. The presence bucket is in server memory and made by a
 * native worker's announcement: a fleet leasing over the HTTP API never makes it, and a
 * server restart loses it until each live worker's next announcement; neither is wrong.
 */
const firstUseBuckets = (prefix: string): ReadonlyMap<string, string> => {
  const n = brokerNames(prefix);
  return new Map([
    [`KV_${agentsBucketFor(prefix)}`, "rt.agents.register()"],
    [
      `KV_${n.presenceBucket}`,
      "a native worker's announcement (kept in server memory: made again after a restart)",
    ],
    [`KV_${n.queuesBucket}`, "rt.queues, or a worker watching its queue's settings"],
    [`KV_${n.flowsBucket}`, "rt.flows.submit()"],
    [`KV_${n.schedulesBucket}`, "rt.schedules.upsert()"],
  ]);
};

/** A role the identity is meant for whose calls it may not make (on the queues it is meant for). */
const missingGrants = (
  roles: readonly RoleCheck[],
  meantRoles: readonly Role[],
  queues: readonly string[] = [],
): Problem[] =>
  roles
    .filter((r) => meantRoles.includes(r.role) && !r.allowed)
    .map((r) => ({
      what: `this identity may not make the ${r.role} role's calls${queues.length > 0 ? ` for queues ${queues.join(", ")}` : ""}: refused ${r.denied.slice(0, 3).join(", ")}${r.denied.length > 3 ? ` and ${r.denied.length - 3} more` : ""}`,
      fix: `grant the permissions natsPermissions(${JSON.stringify({ role: r.role, queues })}) gives (docs/operations.md)`,
    }));

export const diagnose = async (
  core: NatsContext,
  probeTimeoutMs: number,
  meant: { readonly roles?: readonly Role[]; readonly queues?: readonly string[] } = {},
): Promise<Diagnosis> => {
  const prefix = core.options.prefix;
  const n = brokerNames(prefix);
  const buckets = [n.jobsBucket, n.leasesBucket].map((b) => `KV_${b}`);
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
  // The roles are judged on the queues it is meant for too, found or not (a worker may not
  // list streams: it finds none); their streams are checked only when found.
  const probedQueues = [...new Set([...queues, ...(meant.queues ?? [])])].sort();
  const perRole = allRoles.map((role) => roleProbes(prefix, role, probedQueues));
  const probed = perRole.flatMap((r) => [...r.shared, ...[...r.perQueue.values()].flat()]);
  const denied = new Set(await deniedSubjects(core, probed, probeTimeoutMs));
  const meantQueues = meant.queues && new Set(meant.queues);
  const roles = perRole.map((r) => judgeRole(r, denied, meantQueues));
  const found = new Map(first.streams.map((s) => [s.name, s]));
  // The queues' own resources: only what a listing showed (an admin's; others may not read them).
  const queueChecks = first.listed ? await checkQueues(core, found, queues) : undefined;
  const needed = queueChecks?.needed ?? new Map<string, string>();
  const check = (name: string, queue?: string, use = firstUse.get(name)): StoreCheck => {
    const s: StreamFacts | undefined = found.get(name);
    // Made on first use, but the queues' settings say it is in use: missing, it is a problem.
    const unused = needed.has(name) ? undefined : use;
    return {
      name,
      ...(queue === undefined ? {} : { queue }),
      present: s !== undefined ? true : first.unreadable.includes(name) ? null : false,
      ...(unused === undefined ? {} : { firstUse: unused }),
      ...(s ? { replicas: s.replicas, consumers: s.consumers, messages: s.messages } : {}),
    };
  };
  const stores = [
    ...shared.map((name) => check(name)),
    ...queues.flatMap((q) => [check(n.tasksStream(q), q), check(n.advisoriesStream(q), q)]),
    ...(queueChecks?.rows ?? []).map((r) => check(r.name, r.queue, r.firstUse)),
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
          fix:
            needed.get(s.name) ??
            `run \`rt.admin.provision(${s.queue ? `["${s.queue}"]` : ""})\` with an admin's credentials (an admin runtime also creates it on first use)`,
        });
      else if (s.replicas !== replicasWanted)
        problems.push({
          what: `stream ${s.name} has ${s.replicas} replica(s), ${replicasWanted} wanted`,
          fix: `nats stream edit ${s.name} --replicas ${replicasWanted} (or run doctor with the JETSTATE_REPLICAS your runtimes use)`,
        });
    }
  }
  if (meant.roles !== undefined) problems.push(...missingGrants(roles, meant.roles, meant.queues));
  else if (!roles.some((r) => r.allowed))
    problems.push({
      what: "this identity may not make the calls of any role",
      fix: "grant the permissions natsPermissions({ role, queues }) gives (docs/operations.md)",
    });
  problems.push(...(queueChecks?.problems ?? []));
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
