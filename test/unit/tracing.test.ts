/**
 * `jetstate.submit` and `jetstate.task` spans, recorded by a minimal
 * TracerProvider and context manager of the test's own (no SDK is installed),
 * registered globally for this file and disabled after it. The oracle is what
 * the recorder saw: names, attributes, parents, status and exceptions; and
 * the handlers' own ledger of which task failed.
 */
import {
  type Attributes,
  type AttributeValue,
  type Context,
  context,
  type Span,
  type SpanContext,
  type SpanOptions,
  type SpanStatus,
  SpanStatusCode,
  type Tracer,
  type TracerProvider,
  trace,
} from "@opentelemetry/api";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Runtime } from "../../src/api/runtime.ts";
import { PermanentError } from "../../src/kernel/task-outcome.ts";
import { createTestRuntime } from "../../src/testing.ts";
import { StorageContextManager } from "../harness/storage-context.ts";
import { waitUntil } from "../harness/wait.ts";

interface Recorded {
  readonly name: string;
  readonly spanId: string;
  readonly parentId: string | undefined;
  readonly traceId: string;
  readonly attributes: Record<string, AttributeValue | undefined>;
  status: SpanStatus;
  readonly exceptions: unknown[];
  ended: boolean;
}

let ids = 0;
const hex = (n: number, width: number) => n.toString(16).padStart(width, "0");

class RecordingSpan implements Span {
  readonly #context: SpanContext;
  readonly record: Recorded;
  constructor(record: Recorded) {
    this.record = record;
    this.#context = { traceId: record.traceId, spanId: record.spanId, traceFlags: 1 };
  }
  spanContext = () => this.#context;
  setAttribute(key: string, value: AttributeValue) {
    this.record.attributes[key] = value;
    return this;
  }
  setAttributes(attributes: Attributes) {
    Object.assign(this.record.attributes, attributes);
    return this;
  }
  addEvent = () => this;
  addLink = () => this;
  addLinks = () => this;
  setStatus(status: SpanStatus) {
    this.record.status = status;
    return this;
  }
  updateName = () => this;
  end() {
    this.record.ended = true;
  }
  isRecording = () => !this.record.ended;
  recordException(exception: unknown) {
    this.record.exceptions.push(exception);
  }
}

const spans: Recorded[] = [];

class RecordingTracer implements Tracer {
  startSpan(name: string, options: SpanOptions = {}, ctx: Context = context.active()): Span {
    const parent = trace.getSpan(ctx)?.spanContext();
    const record: Recorded = {
      name,
      spanId: hex(++ids, 16),
      parentId: parent?.spanId,
      traceId: parent?.traceId ?? hex(ids, 32),
      attributes: { ...options.attributes },
      status: { code: SpanStatusCode.UNSET },
      exceptions: [],
      ended: false,
    };
    spans.push(record);
    return new RecordingSpan(record);
  }
  // biome-ignore lint/suspicious/noExplicitAny: the API's overloads; jetstate does not call it
  startActiveSpan(name: string, ...args: any[]): any {
    const fn = args[args.length - 1] as (span: Span) => unknown;
    const span = this.startSpan(name);
    return context.with(trace.setSpan(context.active(), span), () => fn(span));
  }
}

const provider: TracerProvider = { getTracer: () => new RecordingTracer() };

describe("spans", () => {
  let rt: Runtime;
  beforeAll(async () => {
    expect(trace.setGlobalTracerProvider(provider)).toBe(true);
    expect(context.setGlobalContextManager(new StorageContextManager())).toBe(true);
    rt = await createTestRuntime();
  });
  afterAll(async () => {
    await rt?.stop();
    trace.disable();
    context.disable();
  });

  it("jetstate.submit names the job; each handler run is a jetstate.task whose context holds the user's own spans; a failure sets error status and records the exception", async () => {
    const queue = "traced";
    const failedFor = new Set<number>();
    const userSpanOf = new Map<number, string>();
    const worker = rt.workers.start<{ n: number }, number>({
      queue,
      handler: async (task) => {
        // Started after an await: the context must survive it.
        await Promise.resolve();
        const mine = trace.getTracer("user").startSpan("user.work");
        userSpanOf.set(task.index, mine.spanContext().spanId);
        mine.end();
        if (task.index === 1) {
          failedFor.add(task.index);
          throw new PermanentError("task 1 fails");
        }
        return task.payload.n;
      },
    });
    const job = await rt.jobs.submit({ queue, tasks: [{ n: 0 }, { n: 1 }, { n: 2 }], maxFailures: 1 });
    await job.done();
    await waitUntil(() => spans.filter((s) => s.name === "jetstate.task" && s.ended).length === 3, {
      timeoutMs: 5000,
      message: "three task spans ended",
    });
    const submit = spans.filter((s) => s.name === "jetstate.submit");
    expect(submit).toHaveLength(1);
    expect(submit[0]?.attributes).toMatchObject({
      "jetstate.queue": queue,
      "jetstate.job.id": job.id,
      "jetstate.job.tasks": 3,
    });
    expect(submit[0]?.status.code).toBe(SpanStatusCode.UNSET);
    const tasks = spans.filter((s) => s.name === "jetstate.task");
    for (const index of [0, 1, 2]) {
      const span = tasks.find((s) => s.attributes["jetstate.task.index"] === index);
      expect(span?.attributes).toEqual({
        "jetstate.queue": queue,
        "jetstate.job.id": job.id,
        "jetstate.task.index": index,
        "jetstate.task.attempt": 1,
      });
      const user = spans.find((s) => s.spanId === userSpanOf.get(index));
      expect(user?.parentId).toBe(span?.spanId);
      expect(user?.traceId).toBe(span?.traceId);
      if (failedFor.has(index)) {
        expect(span?.status).toEqual({ code: SpanStatusCode.ERROR, message: "task 1 fails" });
        expect(span?.exceptions).toHaveLength(1);
        expect(span?.exceptions[0]).toMatchObject({ message: "task 1 fails" });
      } else {
        expect(span?.status.code).toBe(SpanStatusCode.UNSET);
        expect(span?.exceptions).toEqual([]);
      }
    }
    await worker.stop();
  });

  it("a submit refused (bad input) is a jetstate.submit span with error status", async () => {
    const before = spans.length;
    await expect(rt.jobs.submit({ queue: "traced", tasks: "nope" as unknown as [] })).rejects.toThrow();
    const span = spans.slice(before).find((s) => s.name === "jetstate.submit");
    expect(span?.status.code).toBe(SpanStatusCode.ERROR);
    expect(span?.ended).toBe(true);
    expect(span?.exceptions).toHaveLength(1);
  });
});
