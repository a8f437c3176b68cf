/**
 * Every actor of a runtime (the connection, each job) is visible to the
 * XState inspector. `inspect: true` sends them over WebSocket to a Stately
 * inspector relay (JETSTATE_INSPECT_URL, default ws://127.0.0.1:8080) — start
 * one with `createInspectorServer()` from `@statelyai/inspect/server`, which
 * opens the inspector in your browser. Any object with an `inspect(event)`
 * function works too — here, without `--ws`, one that prints each state change.
 *
 *   npx tsx examples/02-inspect.ts [--ws]
 */

import { pino } from "pino";
import type { InspectionEvent } from "xstate";
import { createRuntime } from "../src/index.ts";
import { findOrStartNats } from "./support/local-nats.ts";

const ws = process.argv.includes("--ws");
const nats = await findOrStartNats();
const printer = {
  inspect: (event: InspectionEvent) => {
    if (event.type !== "@xstate.snapshot") return;
    const { value } = event.snapshot as { value?: unknown };
    if (value === undefined) return; // invoked promise/callback actors have no state value
    const id = (event.actorRef as { id?: string }).id ?? "?";
    console.log(`${id.padEnd(40)} ${JSON.stringify(value)}  ← ${event.event.type}`);
  },
};
if (ws) {
  const url = process.env.JETSTATE_INSPECT_URL ?? "ws://127.0.0.1:8080";
  console.log(`actors go to the inspector relay at ${url} (a warning follows if nothing listens there)`);
}
const rt = await createRuntime({
  servers: nats.url,
  logger: pino({ level: "warn" }),
  inspect: ws ? true : printer,
});
const worker = rt.workers.start<number, number>({ queue: "inspect", handler: (t) => t.payload * 2 });
const job = await rt.jobs.submit({ queue: "inspect", tasks: [1, 2, 3] });
const final = await job.done();
console.log(`job ${job.id}: ${final.status}, ${final.done} of ${final.total} tasks done`);
await worker.stop();
await rt.stop(); // also closes the inspector's socket: the process ends by itself
await nats.stop();
