/**
 * The baseline: what one client can do with plain JetStream on this machine.
 * One connection (`noAsyncTraces: true`, as jetstate connects), a fresh
 * work-queue stream on file storage, one durable pull consumer. Timed from the
 * first publish to the last ack:
 *   1. publish N task bodies, pipelined in windows of 256 awaited PubAcks
 *      (the window jetstate's submit uses);
 *   2. then `consume()` them and `ack()` each; a final `flush()` makes sure
 *      the server has the acks.
 * Publish and consume do not overlap, as in a job (no task is visible before
 * the submit commits). Setup (stream, consumer) and clean-up are not timed.
 *
 * `pipelined: true` is the same run with jetstate's own publish technique
 * (src/adapters/nats/publish-pipelined.ts: one reply subscription for all
 * PubAcks, a message id per task, 256 awaited at once) instead of
 * `js.publish()`: the fair comparison for the submit phase, which is
 * otherwise faster in jetstate than in the baseline.
 */
import { AckPolicy, jetstream, jetstreamManager, RetentionPolicy, StorageType } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { PubAcks } from "../src/adapters/nats/pub-acks.ts";
import { publishPipelined } from "../src/adapters/nats/publish-pipelined.ts";
import { cpuMicrosSince, sleep } from "./lib/stats.ts";
import { bodyFor, makePayloads, uniqueName } from "./lib/tasks.ts";
import { type RunOptions, type ThroughputRun, throughputRun } from "./lib/throughput.ts";

const publishWindow = 256;

export interface RawRunOptions extends RunOptions {
  readonly pipelined?: boolean;
}

export async function runRaw(options: RawRunOptions): Promise<ThroughputRun> {
  const { url, n, rep, serverCpu, hooks = {}, pipelined = false, replicas = 1 } = options;
  const stream = uniqueName("raw", rep);
  const nc = await connect({ servers: url.split(","), name: "bench-raw", noAsyncTraces: true });
  try {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({
      name: stream,
      subjects: [`${stream}.>`],
      retention: RetentionPolicy.Workqueue,
      storage: StorageType.File,
      num_replicas: replicas,
    });
    await jsm.consumers.add(stream, {
      durable_name: "work",
      ack_policy: AckPolicy.Explicit,
      max_ack_pending: 20_000,
    });
    const js = jetstream(nc);
    const consumer = await js.consumers.get(stream, "work");
    const subject = `${stream}.tasks`;
    const payloads = makePayloads(n);
    const seenAt = new Float64Array(n).fill(-1);

    await hooks.started?.();
    const cpu = process.cpuUsage();
    const serverCpuStart = serverCpu?.();
    const started = performance.now();
    if (pipelined) {
      const bodies = payloads.map((p, i) => bodyFor(i, p));
      const msgId = (i: number) => `${stream}.${i}`;
      const signal = new AbortController().signal;
      await publishPipelined(new PubAcks(nc, 5000), {
        subject,
        bodies,
        msgId,
        window: publishWindow,
        signal,
      });
    } else {
      for (let start = 0; start < n; start += publishWindow) {
        const acks: Promise<unknown>[] = [];
        const end = Math.min(n, start + publishWindow);
        for (let i = start; i < end; i++) acks.push(js.publish(subject, bodyFor(i, payloads[i]!)));
        await Promise.all(acks);
      }
    }
    const published = performance.now();
    const publishCpu = cpuMicrosSince(cpu);
    if (hooks.committed) await hooks.committed();
    const messages = await consumer.consume({ max_messages: 256 });
    let acked = 0;
    for await (const m of messages) {
      // A fresh stream: sequence n + 1 is task n.
      const i = m.seq - 1;
      if (i >= 0 && i < n && seenAt[i]! < 0) seenAt[i] = performance.now() - started;
      m.ack();
      if (++acked >= n) break;
    }
    await messages.close();
    await nc.flush();
    const ended = performance.now();
    const cpuMicros = cpuMicrosSince(cpu);
    const serverMicros = serverCpuStart === undefined ? undefined : serverCpu!() - serverCpuStart;
    await hooks.ended?.();

    // The server removes acked work-queue messages asynchronously: give it a moment.
    let left = -1;
    for (let tries = 0; tries < 100 && left !== 0; tries++) {
      if (tries > 0) await sleep(20);
      left = (await jsm.streams.info(stream)).state.messages;
    }
    if (left !== 0) throw new Error(`raw run ${rep}: ${left} tasks left in the stream after the last ack`);
    await jsm.streams.delete(stream);
    return throughputRun(pipelined ? "raw-pipelined" : "raw", rep, n, {
      started,
      published,
      ended,
      publishCpuMicros: publishCpu,
      cpuMicros,
      serverCpuMicros: serverMicros,
      seenAt,
    });
  } finally {
    await nc.close();
  }
}
