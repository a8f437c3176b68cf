/**
 * Every actor of a runtime (the connection, each job) is visible to the
 * XState inspector. `inspect: true` serves them over WebSocket for the
 * Stately inspector (JETSTATE_INSPECT_URL, default ws://127.0.0.1:8080);
 * any object with an `inspect(event)` function works too — here one that
 * prints each state change. `npx tsx examples/02-inspect.ts [--ws]`
 */

import { pino } from "pino";
import type { InspectionEvent } from "xstate";
import { createRuntime } from "../src/index.ts";
import { findOrStartNats } from "./support/local-nats.ts";

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
const rt = await createRuntime({
  servers: nats.url,
  logger: pino({ level: "warn" }),
  inspect: process.argv.includes("--ws") ? true : printer,
});
const worker = rt.workers.start<number, number>({ queue: "inspect", handler: (t) => t.payload * 2 });
const job = await rt.jobs.submit({ queue: "inspect", tasks: [1, 2, 3] });
await job.done();
await worker.stop();
await rt.stop();
await nats.stop();
// The WebSocket inspector keeps a reconnect timer alive after stop (see docs/architecture.md).
if (process.argv.includes("--ws")) process.exit(0);
