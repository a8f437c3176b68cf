import type { Role } from "./permissions.ts";

/** One stream or bucket jetstate keeps, as found on the server. */
export interface StoreCheck {
  /** The stream's name (a bucket's stream is `KV_<bucket>`). */
  readonly name: string;
  /** The queue it belongs to, for a queue's own streams (tasks, advisories, delayed, target permits). */
  readonly queue?: string;
  /** null: this identity may not read it (nor list streams), so whether it exists is not known. */
  readonly present: boolean | null;
  /**
   * For a store made only at the first use of what it keeps (the presence, agents, queue settings,
   * flows, schedules and answers buckets, the permits stream, a queue's delayed stream): that use.
   * Missing, it is not in use yet, which is no problem; absent when the queues' settings say
   * it is in use (a limit needs the permits stream).
   */
  readonly firstUse?: string;
  readonly replicas?: number;
  readonly consumers?: number;
  readonly messages?: number;
}

/** Whether this identity may make the read-only API calls a role makes. */
export interface RoleCheck {
  readonly role: Role;
  /** Every probed subject of the role for `queues` answered (write grants are not probed: a probe would write). */
  readonly allowed: boolean;
  readonly denied: readonly string[];
  /**
   * The queues on the server the role was judged for: those of whose calls for it this
   * identity may make at least one (an admin of queue A is not judged on queue B's).
   */
  readonly queues: readonly string[];
}

/**
 * What the identity is meant for (`rt.admin.diagnose(meantFor)`, the CLI's
 * `doctor --role --queue`): its runtime's roles and queues. From its grants
 * alone doctor cannot tell an admin of A from one meant for A and B but
 * granted A only; told, it judges each role named on each queue named.
 */
export interface MeantFor {
  readonly roles?: Role | readonly Role[];
  readonly queues?: readonly string[];
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
