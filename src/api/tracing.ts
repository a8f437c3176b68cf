import {
  type Attributes,
  context,
  INVALID_SPAN_CONTEXT,
  isSpanContextValid,
  ProxyTracerProvider,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
} from "@opentelemetry/api";

/**
 * OpenTelemetry spans, on the API package only: with no tracer provider
 * registered no span is made (`untraced`), and a span that records nothing
 * and belongs to no trace is not made current. The tracer is looked up per
 * span: a provider registered (or replaced) after the runtime started is
 * the one used.
 */
const tracerName = "jetstate-jobs";

/**
 * No tracer provider registered: any span would be a non-recording one,
 * which records nothing and carries the active context's span context, if
 * any, unchanged (made current, it changes nothing a handler could see).
 * Asked before a task's span, so that such a task makes none: the API's
 * proxy made a tracer and a span per call, and a task its attributes and
 * two closures (~0.35 KB a task).
 */
export const untraced = (): boolean => {
  const provider = trace.getTracerProvider();
  return provider instanceof ProxyTracerProvider && provider.getDelegateTracer(tracerName) === undefined;
};

/** The span `op` gets when none is made: records nothing, as a non-recording span of no trace. */
const noSpan = trace.wrapSpanContext(INVALID_SPAN_CONTEXT);

/** `op` with no span, its throw made a rejection as a span's would be. */
const runUntraced = <A>(op: (span: Span) => Promise<A>): Promise<A> => {
  try {
    return op(noSpan);
  } catch (error) {
    return Promise.reject(error);
  }
};

const failed = (span: Span, error: unknown): void => {
  span.recordException(error instanceof Error ? error : String(error));
  span.setStatus({
    code: SpanStatusCode.ERROR,
    message: error instanceof Error ? error.message : String(error),
  });
};

/**
 * Runs `op` inside a span (current in its context, so the spans it starts
 * nest under it); ends it either way. A span that records nothing and
 * belongs to no trace (no SDK registered) is not made current: there is
 * nothing to nest under it, and a context per task, its `with` and an await
 * were ~0.7 µs of a task's CPU.
 */
const inSpan = <A>(
  name: string,
  kind: SpanKind,
  attributes: Attributes,
  op: (span: Span) => Promise<A>,
): Promise<A> => {
  const span = trace.getTracer(tracerName).startSpan(name, { kind, attributes });
  if (!span.isRecording() && !isSpanContextValid(span.spanContext())) return runUntraced(() => op(span));
  return inCurrentSpan(span, op);
};

const inCurrentSpan = async <A>(span: Span, op: (span: Span) => Promise<A>): Promise<A> => {
  try {
    return await context.with(trace.setSpan(context.active(), span), () => op(span));
  } catch (error) {
    failed(span, error);
    throw error;
  } finally {
    span.end();
  }
};

/** `jetstate.task`: one handler run of one delivery. */
export const inTaskSpan = <A>(
  queue: string,
  jobId: string,
  index: number,
  attempt: number,
  run: () => Promise<A>,
): Promise<A> =>
  untraced()
    ? runUntraced(run)
    : inSpan(
        "jetstate.task",
        SpanKind.CONSUMER,
        {
          "jetstate.queue": queue,
          "jetstate.job.id": jobId,
          "jetstate.task.index": index,
          "jetstate.task.attempt": attempt,
        },
        run,
      );

/** `jetstate.submit`: one `rt.jobs.submit()`, validation included; the job id once it is known. */
export const inSubmitSpan = <A extends { readonly id: string }>(
  request: unknown,
  submit: () => Promise<A>,
): Promise<A> => {
  if (untraced()) return runUntraced(submit);
  const { queue, tasks } = (typeof request === "object" && request !== null ? request : {}) as {
    queue?: unknown;
    tasks?: unknown;
  };
  const name = typeof queue === "string" ? queue : (queue as { name?: unknown } | undefined)?.name;
  return inSpan(
    "jetstate.submit",
    SpanKind.PRODUCER,
    {
      ...(typeof name === "string" ? { "jetstate.queue": name } : {}),
      ...(Array.isArray(tasks) ? { "jetstate.job.tasks": tasks.length } : {}),
    },
    async (span) => {
      const handle = await submit();
      span.setAttribute("jetstate.job.id", handle.id);
      return handle;
    },
  );
};
