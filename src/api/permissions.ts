import { brokerNames, laneConsumer, permitsConsumer } from "../adapters/names.ts";
import { agentsBucketFor } from "../adapters/nats/kv-agent-store.ts";
import { deadLettersConsumer } from "../adapters/nats/queue-streams.ts";
import { InvalidArgument, RoleNotHeld } from "../kernel/errors.ts";
import { check, checkOr, Prefix, SubjectToken } from "../kernel/validation.ts";

/**
 * What a runtime does (`createRuntime({ roles })`); a runtime may take several.
 * - `submitter`: `rt.jobs` (submit, get, cancel, results, redrive); supervises the jobs it submits;
 * - `worker`: `rt.workers.start()` for the queues its NATS user may read;
 * - `supervisor`: takes over jobs whose supervisor died, turns exhausted tasks into dead letters;
 * - `admin`: creates the shared streams and buckets (`rt.admin.provision()`), reaps dead submits, cleans up.
 */
export type Role = "submitter" | "worker" | "supervisor" | "admin";

export const allRoles: readonly Role[] = ["submitter", "worker", "supervisor", "admin"];

/** A NATS user's permissions, in the shape of the server config's `permissions` block and of a user JWT's. */
export interface NatsPermissions {
  readonly publish: { readonly allow: readonly string[] };
  readonly subscribe: { readonly allow: readonly string[] };
}

export interface PermissionsRequest {
  /** The role (or roles) the NATS user's runtime takes. */
  readonly role: Role | readonly Role[];
  /**
   * The queues the user may touch; `"*"`: every queue (NATS wildcards match
   * whole tokens, so this opens every stream of the account to the API verbs
   * the role uses; name the queues where you can).
   */
  readonly queues: readonly string[] | "*";
  /** The runtime's prefix. @defaultValue `"jetstate"` */
  readonly prefix?: string;
}

/**
 * The NATS permissions a runtime with these roles needs, and no more: a
 * worker of queue A can neither pull, answer, nor read the results of queue
 * B's tasks. Paste the result into the server's `authorization.users[].permissions`
 * (or a user JWT). Replies come on `_INBOX.>`; see docs/operations.md for what
 * each role is allowed and why.
 */
export const natsPermissions = (request: PermissionsRequest): NatsPermissions => {
  const prefix = checkOr(Prefix, request.prefix, "prefix", "jetstate");
  const roles = rolesOf(request.role, "role");
  const queues = queuesOf(request.queues);
  const publish = new Set<string>(["$JS.API.INFO"]);
  const subscribe = new Set<string>(["_INBOX.>"]);
  for (const role of roles) {
    const grant = grants[role](layout(prefix), queues);
    for (const subject of grant.publish) publish.add(subject);
    for (const subject of grant.subscribe ?? []) subscribe.add(subject);
  }
  return { publish: { allow: [...publish] }, subscribe: { allow: [...subscribe] } };
};

/** Throws `RoleNotHeld` unless the runtime has `role`; `call` names what needed it. */
export const requireRole = (roles: ReadonlySet<Role>, role: Role, call: string): void => {
  if (!roles.has(role))
    throw new RoleNotHeld({
      role,
      message: `${call} needs the ${role} role; this runtime's roles: ${[...roles].join(", ")}`,
    });
};

/** Checks a `roles` option: a non-empty list of known roles, no repeats. */
export const rolesOf = (value: unknown, field: string): readonly Role[] => {
  const list = typeof value === "string" ? [value] : value;
  if (!Array.isArray(list) || list.length === 0)
    throw new InvalidArgument({ field, message: `${field}: must be a role or a non-empty list of roles` });
  for (const role of list) {
    if (!allRoles.includes(role as Role))
      throw new InvalidArgument({
        field,
        message: `${field}: unknown role ${JSON.stringify(role)} (known: ${allRoles.join(", ")})`,
      });
  }
  return [...new Set(list as Role[])];
};

const queuesOf = (value: unknown): readonly string[] => {
  if (value === "*") return ["*"];
  if (!Array.isArray(value) || value.length === 0)
    throw new InvalidArgument({
      field: "queues",
      message: 'queues: must be "*" or a non-empty list of queue names',
    });
  return value.map((queue, i) => check(SubjectToken, queue, `queues[${i}]`));
};

/** The NATS broker's names (adapters/names.ts), with `*` standing for any queue in a stream's name. */
const layout = (prefix: string) => {
  const names = brokerNames(prefix);
  const anyQueue = (stream: (queue: string) => string) => (queue: string) =>
    queue === "*" ? "*" : stream(queue);
  return {
    ...names,
    prefix,
    tasksStream: anyQueue(names.tasksStream),
    targetPermitsStream: anyQueue(names.targetPermitsStream),
    advisoriesStream: anyQueue(names.advisoriesStream),
    delayedStream: anyQueue(names.delayedStream),
    agentsBucket: agentsBucketFor(prefix),
  };
};
type Layout = ReturnType<typeof layout>;

interface Grant {
  readonly publish: readonly string[];
  readonly subscribe?: readonly string[];
}

const streamInfo = (stream: string) => [`$JS.API.STREAM.INFO.${stream}`];
const streamCreate = (stream: string) => [`$JS.API.STREAM.CREATE.${stream}`, ...streamInfo(stream)];
/** Pull from a stream's consumers and answer their deliveries. */
const consume = (stream: string) => [
  `$JS.API.CONSUMER.INFO.${stream}.*`,
  `$JS.API.CONSUMER.MSG.NEXT.${stream}.*`,
  `$JS.ACK.${stream}.>`,
];
/** Create (named, durable or ephemeral), inspect, pull from and delete a stream's consumers. */
const manageConsumers = (stream: string) => [
  `$JS.API.CONSUMER.CREATE.${stream}`,
  `$JS.API.CONSUMER.CREATE.${stream}.>`,
  `$JS.API.CONSUMER.DURABLE.CREATE.${stream}.*`,
  `$JS.API.CONSUMER.DELETE.${stream}.*`,
  ...consume(stream),
];
/** Read one stored message by sequence or subject, and delete one. */
const messages = (stream: string) => [
  `$JS.API.STREAM.MSG.GET.${stream}`,
  `$JS.API.STREAM.MSG.DELETE.${stream}`,
  `$JS.API.DIRECT.GET.${stream}`,
  `$JS.API.DIRECT.GET.${stream}.>`,
];
/** Read a KV bucket: get, keys and watch (ordered consumers). */
const kvRead = (bucket: string) => [
  ...streamInfo(`KV_${bucket}`),
  `$JS.API.DIRECT.GET.KV_${bucket}`,
  `$JS.API.DIRECT.GET.KV_${bucket}.>`,
  `$JS.API.STREAM.MSG.GET.KV_${bucket}`,
  ...manageConsumers(`KV_${bucket}`),
];
const kvWrite = (bucket: string) => [`$KV.${bucket}.>`, ...kvRead(bucket)];

/**
 * Take and give back the queue's permits (rt.queues limits): pull from and
 * answer its two permit consumers only (`*`: every queue's), and make them
 * when missing: deleted by hand (`nats consumer rm`), nothing else makes
 * them again while the queue's limits stay (`configure` makes them), and a
 * worker refused the create stopped the queue's limited work. Publish its
 * queue's permits (its two subjects only, as it may fill its target pools):
 * a taker that finds a pool lost with its stream (deleted by hand, the
 * server back with an empty store) publishes the record's permits again,
 * and nothing else would until the next `configure`.
 */
const permits = (n: Layout, queue: string) => {
  const consumers =
    queue === "*" ? ["*"] : [permitsConsumer(queue, "concurrency"), permitsConsumer(queue, "rate")];
  return [
    ...streamInfo(n.permitsStream),
    ...consumers.flatMap((c) => [
      `$JS.API.CONSUMER.INFO.${n.permitsStream}.${c}`,
      `$JS.API.CONSUMER.MSG.NEXT.${n.permitsStream}.${c}`,
      `$JS.ACK.${n.permitsStream}.${c}.>`,
      `$JS.API.CONSUMER.CREATE.${n.permitsStream}.${c}.>`,
      `$JS.API.CONSUMER.DURABLE.CREATE.${n.permitsStream}.${c}`,
    ]),
    `${n.prefix}.permits.${queue}.*`,
    // An HTTP API instance tells the others of a heartbeat or an answer of a lease whose permit
    // one of them holds (core NATS; heard on the same subject, below).
    n.leaseNotesSubject(queue),
  ];
};

/**
 * The queue's pools per agent target (rt.queues perTarget), on its own
 * stream: a worker fills a pool on its first use (publish, read its marker,
 * make its consumer), takes and gives back its permits.
 */
const targetPermits = (n: Layout, queue: string) => {
  const stream = n.targetPermitsStream(queue);
  return [
    ...streamInfo(stream),
    `$JS.API.STREAM.MSG.GET.${stream}`,
    `$JS.API.CONSUMER.CREATE.${stream}.>`,
    `$JS.API.CONSUMER.DURABLE.CREATE.${stream}.*`,
    ...consume(stream),
    `${n.prefix}.tpermits.${queue}.>`,
  ];
};

/** A job's messages, per queue: results, progress notes and dead letters. */
const answer = (n: Layout, queue: string) => [
  n.resultsSubject(queue, "*"),
  n.progressSubject(queue, "*"),
  n.deadSubject(queue, "*"),
];

/** Supervising a job: its record, lease, results and dead letters, and removing its tasks at the end. */
const supervise = (n: Layout, queues: readonly string[]): string[] => [
  // rt.workers.list() and rt.agents.list(): who serves the queues (read only).
  ...kvRead(n.presenceBucket),
  // rt.queues.get() and list() (read only: pausing and limits are the admin's).
  ...kvRead(n.queuesBucket),
  ...kvRead(n.agentsBucket),
  ...kvWrite(n.jobsBucket),
  ...kvWrite(n.leasesBucket),
  // rt.flows: the flow records, written by their submitter and stepped by every driver.
  ...kvWrite(n.flowsBucket),
  // A flow that settled has its mark (`live.<flowId>`) purged from the bucket's stream.
  `$JS.API.STREAM.PURGE.KV_${n.flowsBucket}`,
  // A lease that goes (its job over) is purged from the bucket's stream, marker and all, or
  // removed by its sequence (a server not in a cluster).
  `$JS.API.STREAM.PURGE.KV_${n.leasesBucket}`,
  `$JS.API.STREAM.MSG.DELETE.KV_${n.leasesBucket}`,
  ...streamInfo(n.resultsStream),
  ...manageConsumers(n.resultsStream),
  // Whether a job has results stored yet (its last message by subject), before reading them.
  `$JS.API.STREAM.MSG.GET.${n.resultsStream}`,
  ...streamInfo(n.deadStream),
  ...manageConsumers(n.deadStream),
  ...messages(n.deadStream),
  ...queues.flatMap((q) => [
    ...streamInfo(n.tasksStream(q)),
    ...manageConsumers(n.tasksStream(q)),
    `$JS.API.STREAM.PURGE.${n.tasksStream(q)}`,
    // Whether a lane job's task is stored (its commit point's witness), and its removal at the
    // job's end, cancel or rollback: by sequence, never a filtered purge (subject-messages.ts);
    // a dead task's own message, deleted by a redrive (its term may have been lost).
    `$JS.API.STREAM.MSG.GET.${n.tasksStream(q)}`,
    `$JS.API.STREAM.MSG.DELETE.${n.tasksStream(q)}`,
    ...streamInfo(n.advisoriesStream(q)),
  ]),
];

/**
 * Holding delayed tasks and moving them once due (every submitter and
 * supervisor runs a mover): each of its queues' delayed stream and its `due`
 * consumer; held tasks removed one by one (a cancel, an end); a due task
 * published to its job's subject. A stream per queue: a user of queue A can
 * neither read nor pull queue B's held tasks (docs/architecture.md,
 * "Delayed tasks").
 */
const holdAndMove = (n: Layout, queues: readonly string[]): string[] =>
  queues.flatMap((q) => [
    ...streamCreate(n.delayedStream(q)),
    ...manageConsumers(n.delayedStream(q)),
    ...messages(n.delayedStream(q)),
    n.delayedSubject(q, "*"),
    n.tasksSubject(q, "*"),
  ]);

const grants: Record<Role, (n: Layout, queues: readonly string[]) => Grant> = {
  worker: (n, queues) => ({
    publish: [
      // Hears of its queue's jobs by watching the records (read only: no payloads there).
      ...kvRead(n.jobsBucket),
      ...kvWrite(n.agentsBucket),
      // Announces itself while it lives (rt.workers.list()).
      ...kvWrite(n.presenceBucket),
      // Watches its queue's pause and limits (read only), and takes its permits.
      ...kvRead(n.queuesBucket),
      ...streamInfo(n.resultsStream),
      ...streamInfo(n.deadStream),
      ...queues.flatMap((q) => [
        ...streamInfo(n.tasksStream(q)),
        ...consume(n.tasksStream(q)),
        // Finds what it pulls at its start: the queue's jobs with a consumer, and the lane.
        `$JS.API.CONSUMER.NAMES.${n.tasksStream(q)}`,
        ...answer(n, q),
        ...permits(n, q),
        ...targetPermits(n, q),
        // Before its first pull it checks that the queue's advisories are captured (looks only).
        ...streamInfo(n.advisoriesStream(q)),
        `$JS.API.CONSUMER.INFO.${n.advisoriesStream(q)}.${deadLettersConsumer}`,
        // Its queue's lane, and that consumer only, it makes when it finds it missing: lost with
        // the server's store or deleted by hand, nothing else makes it again (a submitter sets it
        // up once per connection), and a worker that reaches it before its submitter does is
        // refused (a violation in the server's log). No reach beyond the queue's tasks it pulls.
        `$JS.API.CONSUMER.CREATE.${n.tasksStream(q)}.${laneConsumer}.>`,
        `$JS.API.CONSUMER.DURABLE.CREATE.${n.tasksStream(q)}.${laneConsumer}`,
        // A task on its last delivery that it cannot run as it stops (a paused queue) it puts
        // back: a copy on its job's subject or the lane's (`TaskLease.putBack`). A release would
        // spend that delivery: the task died unrun. Its queue's tasks only, as it answers them.
        n.tasksSubject(q, "*"),
        n.laneSubject(q, "*"),
      ]),
    ],
    subscribe: queues.map((q) => n.leaseNotesSubject(q)),
  }),
  submitter: (n, queues) => ({
    publish: [
      ...supervise(n, queues),
      ...holdAndMove(n, queues),
      // rt.schedules and the scheduler: reads every schedule, moves lastTick, makes the bucket at
      // the first upsert (schedules name any queue: submitting a tick's job needs that queue's grants).
      ...kvWrite(n.schedulesBucket),
      ...streamCreate(`KV_${n.schedulesBucket}`),
      ...queues.flatMap((q) => [
        // The first submit to a queue creates its streams.
        ...streamCreate(n.tasksStream(q)),
        ...streamCreate(n.advisoriesStream(q)),
        ...manageConsumers(n.advisoriesStream(q)),
        n.tasksSubject(q, "*"),
        n.laneSubject(q, "*"),
        n.jobCreatedSubject(q),
      ]),
    ],
    subscribe: queues.map((q) => n.progressSubject(q, "*")),
  }),
  supervisor: (n, queues) => ({
    publish: [
      ...supervise(n, queues),
      ...holdAndMove(n, queues),
      // Finds the queues whose exhausted tasks it turns into dead letters.
      "$JS.API.STREAM.NAMES",
      ...queues.flatMap((q) => [
        ...manageConsumers(n.advisoriesStream(q)),
        ...messages(n.tasksStream(q)),
        ...answer(n, q),
      ]),
    ],
  }),
  admin: (n, queues) => {
    const buckets = [
      n.jobsBucket,
      n.leasesBucket,
      n.answersBucket,
      n.agentsBucket,
      n.presenceBucket,
      n.queuesBucket,
      n.flowsBucket,
      n.schedulesBucket,
    ];
    const streams = [
      n.resultsStream,
      n.deadStream,
      ...buckets.map((b) => `KV_${b}`),
      ...queues.flatMap((q) => [
        n.tasksStream(q),
        n.advisoriesStream(q),
        n.delayedStream(q),
        n.targetPermitsStream(q),
      ]),
      // rt.queues.configure() rewrites the permit pools: purge and publish.
      n.permitsStream,
    ];
    return {
      publish: [
        "$JS.API.STREAM.NAMES",
        "$JS.API.STREAM.LIST",
        ...streams.flatMap((s) => [
          `$JS.API.STREAM.*.${s}`,
          ...manageConsumers(s),
          `$JS.API.CONSUMER.LIST.${s}`,
          `$JS.API.CONSUMER.NAMES.${s}`,
          ...messages(s),
        ]),
        ...buckets.map((b) => `$KV.${b}.>`),
        ...queues.map((q) => `${n.prefix}.permits.${q}.*`),
      ],
    };
  },
};
