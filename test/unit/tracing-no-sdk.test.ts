/**
 * `inTaskSpan` without a recording SDK: a context manager of the test's own
 * is registered (as an application may have one without tracing), and either
 * no tracer provider (every span non-recording, of no trace: nothing is made
 * current, the handler sees the caller's context) or one whose spans are
 * sampled out (non-recording but of a trace: made current, so what the
 * handler starts joins that trace). The oracle is the active context the
 * handler sees, read through the API.
 */
import {
  context,
  createContextKey,
  ROOT_CONTEXT,
  type SpanContext,
  TraceFlags,
  type Tracer,
  trace,
} from "@opentelemetry/api";
import { afterAll, afterEach, beforeAll, expect, it, vi } from "vitest";
import { inTaskSpan } from "../../src/api/tracing.ts";
import { StorageContextManager } from "../harness/storage-context.ts";

const callerKey = createContextKey("the caller's");

beforeAll(() => {
  expect(context.setGlobalContextManager(new StorageContextManager())).toBe(true);
});
afterEach(() => {
  trace.disable();
});
afterAll(() => {
  context.disable();
});

/** What the handler sees: the active span's context, and the caller's own key. */
const seenByHandler = () =>
  context.with(ROOT_CONTEXT.setValue(callerKey, "here"), () =>
    inTaskSpan("q", "job", 0, 1, async () => ({
      span: trace.getActiveSpan()?.spanContext(),
      caller: context.active().getValue(callerKey),
    })),
  );

it("with no tracer provider the handler runs in the caller's context: no span made current", async () => {
  expect(await seenByHandler()).toEqual({ span: undefined, caller: "here" });
});

it("with no tracer provider, a span context carried in by the caller is what the handler sees", async () => {
  const carried: SpanContext = {
    traceId: "4bf92f3577b34da6a3ce929d0e0e4736",
    spanId: "00f067aa0ba902b7",
    traceFlags: TraceFlags.SAMPLED,
  };
  const seen = await context.with(
    trace.setSpanContext(ROOT_CONTEXT, carried).setValue(callerKey, "here"),
    () =>
      inTaskSpan("q", "job", 0, 1, async () => ({
        span: trace.getActiveSpan()?.spanContext(),
        caller: context.active().getValue(callerKey),
      })),
  );
  expect(seen).toEqual({ span: carried, caller: "here" });
});

it("with no tracer provider a task makes no span: no tracer is asked for", async () => {
  const proxy = trace.getTracerProvider();
  const asked = vi.spyOn(proxy, "getTracer");
  try {
    await inTaskSpan("q", "job", 0, 1, async () => undefined);
    expect(asked).not.toHaveBeenCalled();
  } finally {
    asked.mockRestore();
  }
});

it("a sampled-out span of a trace is made current: what the handler starts joins that trace", async () => {
  const sampledOut: SpanContext = {
    traceId: "0af7651916cd43dd8448eb211c80319c",
    spanId: "b7ad6b7169203331",
    traceFlags: TraceFlags.NONE,
  };
  const tracer = { startSpan: () => trace.wrapSpanContext(sampledOut) } as unknown as Tracer;
  expect(trace.setGlobalTracerProvider({ getTracer: () => tracer })).toBe(true);
  const seen = await seenByHandler();
  expect(seen.span).toEqual(sampledOut);
  expect(seen.caller).toBe("here");
});
