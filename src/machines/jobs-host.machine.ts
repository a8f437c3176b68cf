import { type AnyActorRef, setup, stopChild } from "xstate";

/**
 * The parent of a runtime's job actors: one actor system for all of them,
 * not one each. A root actor makes a system of its own (its registry, its
 * scheduler, a dozen closures: about 1.7 KB of heap on every live job). The
 * jobs are made with this actor as their `parent`, not spawned into its
 * context: a spawn copies the parent's children on every job.
 *
 * It decides nothing. A job actor with a parent can only be stopped by it
 * (`job.stop`). What a job sends its parent when it ends or fails is ignored
 * (`*`): an error event nothing handles would stop this actor, and with it
 * every job's way to be stopped.
 */
export const jobsHostMachine = setup({
  types: { events: {} as { type: "job.stop"; job: AnyActorRef } },
}).createMachine({
  id: "jobs",
  on: {
    "job.stop": { actions: stopChild(({ event }) => event.job) },
    "*": {},
  },
});
