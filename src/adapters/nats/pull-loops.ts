import { setMaxListeners } from "node:events";
import {
  type ConsumerMessages,
  JetStreamApiError,
  type JetStreamClient,
  type JsMsg,
} from "@nats-io/jetstream";
import type { Msg, NatsConnection } from "@nats-io/transport-node";
import { Effect, Fiber } from "effect";
import type { Logger } from "../../kernel/logger.ts";
import { abortRace } from "../../kernel/signals.ts";
import { Buffered } from "./buffered-tasks.ts";
import type { ConsumerLives } from "./consumer-lives.ts";
import type { NatsJobBroker } from "./job-broker.ts";
import { isNotFound } from "./streams.ts";

/**
 * How jetstate's pull loops (a worker's tasks, a queue's results feed, a
 * queue's advisories, the job-record watch) notice that their consumer is
 * lost: a new leader elected elsewhere, the consumer or its stream deleted,
 * a server back with an empty store. nats.js counts two missed idle
 * heartbeats, then looks the consumer up; with `abort_on_missing_resource`
 * a consumer or stream that is gone ends the loop, and `superviseLoop`
 * starts it again (or the loop says "gone"). With nats.js's defaults (30 s
 * expiry, a heartbeat every 15 s, 30 s between failed look-ups) that took
 * 30–45 s; with these a lost consumer is noticed in ~2 s, and a failed
 * look-up (no leader yet) is tried again every few seconds. The cost is an
 * idle loop's heartbeat every second and a pull request every 3 s; the hot
 * path's pulls are sized by `max_messages`, not by the expiry (`npm run bench`).
 */
export const pullLoop = { expires: 3000, idle_heartbeat: 1000, abort_on_missing_resource: true } as const;

/**
 * How long a task a stopping worker hands back waits before it is released
 * (`TaskLease.handBack`). A closed loop leaves pull requests at the server:
 * those it had sent, and those nats.js sends after the close (its refills
 * are queued in the iterator behind the buffered deliveries the loop still
 * hands back). nats-server before 2.10.16 took a released task off its
 * redelivery queue while only such requests waited, found none with a
 * subscriber, dropped the requests and the task with them, and counted the
 * delivery: the task came back when its lease ran out, the job's ack wait
 * (30 s by default). Seen in the trace of 2.9.10: a stopping worker's
 * `-NAK`s, a pull request of its closed loop, then no delivery of those
 * tasks until their third, 10 s later (that job's ack wait). The requests
 * are gone once each expired (3 s) or the server looked at them again
 * (within a second, its idle heartbeat): 3.5 s leaves room for both. Kept
 * on newer servers too: the consumer's leader, where the fix matters, may
 * be a node of another version than the one the client talks to (a rolling
 * upgrade), and the wait costs only a stopping worker's hand-backs.
 */
export const closedPullsRunOutMs = pullLoop.expires + 500;

/**
 * Closes a stopping worker's task loop with a drain, not nats.js's
 * unsubscribe: the `UNSUB`, then a round trip to the server, and every task
 * that reaches the client meanwhile is passed to `late` (its worker hands
 * it back, released after `closedPullsRunOutMs`, or runs it if it is its
 * last delivery), or handed back without one. The returned promise settles
 * once the drain's round trip is over (at most `closedPullsRunOutMs`) and
 * `late` has taken each task; what comes after that is handed back.
 * nats.js's `close()` forgets the subscription at once, so a task the server sent just before it read the `UNSUB` was
 * dropped by the client, and came back only after its lease. Seen in the
 * server's trace: two tasks sent to the loop just before its `UNSUB`, never
 * run, back 10 s later (that job's ack wait). nats.js has no drain of a
 * consumer's loop: this takes its subscription over (its `sub` field, the
 * subscription's `callback` and `unsubscribe`, replaced on the instance; none
 * in nats.js's types, and without them the loop closes as before). A catcher
 * that kept the subscription until the loop's requests ran out was tried: it
 * took the tasks the server would have given the workers still running (a
 * redriven task of a `maxDeliver: 1` job died in it, delivered once and
 * handed back). Both: `test/integration/worker-stop-handback.both.test.ts`.
 */
export const drainOnStop = (
  messages: ConsumerMessages,
  log: Logger,
  consumerName: string,
  late?: (msg: Msg) => void | Promise<void>,
): Promise<void> => {
  const own = (messages as { readonly sub?: unknown }).sub as
    | { callback?: unknown; unsubscribe?: unknown; drain?: unknown }
    | undefined;
  if (typeof own?.callback !== "function" || typeof own.drain !== "function") return Promise.resolve();
  let caught = 0;
  const passedOn: Promise<void>[] = [];
  // Passed on while the drain is waited for; handed back after (its worker no longer waits).
  let waited = true;
  const handBack = `-NAK ${JSON.stringify({ delay: closedPullsRunOutMs * 1_000_000 })}`;
  own.callback = (_error: unknown, msg: Msg) => {
    // A request's end or a heartbeat is a status, with no reply subject; a task has its ack's.
    if (!msg.reply) return;
    caught++;
    try {
      // Its worker decides: a hand-back, or a run if it is the task's last delivery.
      if (late && waited) passedOn.push(Promise.resolve(late(msg)).catch(() => undefined));
      else msg.respond(handBack);
    } catch {
      // The client closing or draining: the task comes back when its lease runs out.
    }
  };
  // nats.js's close() would forget it at once: the drain ends it.
  own.unsubscribe = () => {};
  // Its round trip waits for a reconnect while the connection is down: not longer than a
  // closed loop's requests live (what comes later is handed back all the same, unwaited for).
  const bound = abortRace(AbortSignal.timeout(closedPullsRunOutMs));
  const drained = (own.drain() as Promise<void>).catch(() => undefined); // the client closed
  return bound.race(drained).then(async () => {
    waited = false;
    bound.release();
    if (caught > 0)
      log.debug({ consumer: consumerName, caught }, "tasks sent to a stopped task loop passed on");
    await Promise.all(passedOn);
  });
};

/** How a task loop closed because its worker stops lets go of what reaches it meanwhile. */
export interface LoopStop {
  /** True once the loop's worker stops: the loop then closes with a drain (`drainOnStop`). */
  readonly handsBack: () => boolean;
  /**
   * A task that reached the loop during that drain, as a plain message: its
   * worker hands it back, or runs it if this is its last delivery (a
   * hand-back would spend it). Without it the drain hands every task back.
   */
  readonly late?: (msg: Msg) => void | Promise<void>;
}

/**
 * A delivery of a loop that stopped pulling: a release is not redelivered
 * before that loop's pull requests are gone (`closedPullsRunOutMs` from its
 * close), as a stopping worker's hand-back is not. Released at once while
 * such requests waited, nats-server 2.9 gave it to one of them and later
 * delivered it twice (seen: `queue-wait-runs-once.test.ts`, tasks handed
 * over during a pause ran twice after the resume).
 */
export const fromClosedLoop = <M extends { nak(millis?: number): void }>(m: M, closedAt = Date.now()): M => {
  const nak = m.nak.bind(m);
  m.nak = (millis?: number) => nak(closedLoopDelay(closedAt, millis));
  return m;
};

/** The delay of a release of a task of a loop closed at `closedAt`: `millis`, or more, as above. */
export const closedLoopDelay = (closedAt: number, millis = 0): number =>
  Math.max(millis, closedAt + closedPullsRunOutMs - Date.now());

/** How long a task loop may have nothing before it checks that it still has a pull at its consumer. */
const stuckCheckMs = 5000;

/** A pull loop's end because its consumer or stream is gone (deleted, or lost with the server's store). */
export const isConsumerGone = (error: unknown): boolean => {
  if (isNotFound(error)) return true;
  const { code, message } = (error ?? {}) as { code?: unknown; message?: unknown };
  return code === 409 && typeof message === "string" && /(consumer|stream) deleted/.test(message);
};

/** JetStream "stream not found": the stream itself is gone, not just a consumer. */
const isStreamGone = (error: unknown): boolean => error instanceof JetStreamApiError && error.code === 10059;

/**
 * Delivers the tasks of a consumer on the queue's tasks stream (a job's,
 * named by its id, or the queue's lane) to `onTask` until the consumer is
 * deleted (the job finished or was cancelled: returns "gone"), the client
 * closes or `signal` aborts. `maxMessages` bounds the leases held but not yet started.
 * A loop closed while `stop.handsBack()` says its worker stops is drained
 * (`drainOnStop`), and returns once what the drain caught is passed on;
 * closed for a job's end or a restart, it lets go as nats.js does. `lives`
 * hears each round's consumer (`ConsumerLives`).
 */
export const consumeTasks = async (
  broker: NatsJobBroker,
  nc: NatsConnection,
  queue: string,
  consumerName: string,
  maxMessages: number,
  onTask: (msg: JsMsg) => void | Promise<void>,
  signal: AbortSignal,
  log: Logger,
  stop?: LoopStop,
  lives?: ConsumerLives,
): Promise<"gone" | "ended" | "again"> => {
  const { js } = await broker.queueHandles(nc, queue);
  let consumer: Awaited<ReturnType<JetStreamClient["consumers"]["get"]>>;
  try {
    consumer = await js.consumers.get(broker.names.tasksStream(queue), consumerName);
  } catch (error) {
    if (isStreamGone(error)) broker.setups.forget(nc);
    if (isNotFound(error)) return "gone";
    throw error;
  }
  // Before any delivery of this round: one of a consumer made again ends the life before.
  const info = await consumer.info(true).catch(() => undefined);
  if (info) lives?.met(info.created, info.delivered.consumer_seq);
  // Refill when half the leases are used, in pulls of half the window
  // (nats.js: at a quarter, pulls of a quarter): half the pull requests for
  // the same bound on leases held. With 50 leases the consume phase took
  // 8-23 % less time with a CPU hog running, the same without (bench/README.md).
  const messages = await consumer.consume({
    max_messages: maxMessages,
    threshold_messages: Math.max(1, Math.floor(maxMessages / 2)),
    ...pullLoop,
  });
  // Settles once the drain has passed on what reached the loop (stop() waits for the loop).
  let drained: Promise<void> | undefined;
  // Before it yields anything (its first pull is itself queued in it).
  const buffered = Buffered.of(messages);
  const stopped = closeWhenEnded(messages, nc, signal, () => {
    // Once: a second close (the client closing meanwhile) finds the subscription drained.
    if (stop?.handsBack()) drained ??= drainOnStop(messages, log, consumerName, stop.late);
  });
  const idle = { since: Date.now(), busy: false };
  // A fiber the loop's end interrupts. A check in flight then is not waited for: during an
  // election its look-up can take the whole API timeout, and all it can still do is log, or
  // close an iterator that has ended already.
  const watchdog = Effect.runFork(
    Effect.sleep(`${stuckCheckMs} millis`).pipe(
      Effect.andThen(
        Effect.promise(() => restartIfNotPulling(consumer, consumerName, idle, stopped.close, log)),
      ),
      Effect.forever,
    ),
  );
  // A task buffered behind others that wait to start (a busy worker, a paused queue, a permit)
  // holds a lease nobody keeps: past it, the server gives it to another worker, and run here
  // afterwards it ran twice (seen: a queue paused for 36 s with a 30 s ack wait; 2 slots of
  // 700 ms handlers with a 1 s ack wait, where no single wait reached half the lease but two
  // in a row outlived it). Once the oldest task buffered has waited half its lease (looked at
  // after each start, and every sixth of the lease while the loop waits), the loop stops
  // pulling and hands what it buffered to `onTask` at once, each lease extended: they wait for
  // their slots each on its own, their leases kept for a while (`RunningTasks.whileWaiting`).
  // The loop ends once its own task has started, and once those have (or have gone back); its
  // caller pulls again at once ("again"). Without the arrival times (another nats.js), a
  // single wait that long is the sign, and what is buffered is dropped, unrun (the server
  // redelivers each at its lease's end).
  const ackWaitMs = (info?.config.ack_wait ?? 30e9) / 1e6;
  const staleAfterMs = ackWaitMs / 2;
  let outwaited = false;
  /** Tasks handed over as the loop lets go of its buffer: it ends once each has started. */
  const handedOver: Array<void | Promise<void>> = [];
  const stale = (now: number): boolean => {
    const oldest = buffered?.oldest();
    return oldest !== undefined && now - oldest > staleAfterMs && !outwaited && !stop?.handsBack();
  };
  const letGo = (waitedMs: number): void => {
    outwaited = true;
    const tasks = buffered?.handOver() ?? [];
    log.debug(
      { consumer: consumerName, waitedMs, buffered: tasks.length },
      "tasks buffered past half their lease: handed over, pulling again",
    );
    // No more pulls: the drain passes on what the server sent as the loop unsubscribed, and the
    // loop breaks out as soon as its own task started (the refills queued in nats.js's iterator
    // would pull again into a subscription that is gone).
    drained ??= drainOnStop(messages, log, consumerName, stop?.late);
    const closedAt = Date.now();
    for (const m of tasks) {
      m.working();
      handedOver.push(onTask(fromClosedLoop(m, closedAt)));
    }
  };
  const ageCheck =
    buffered &&
    setInterval(
      () => {
        const now = Date.now();
        if (idle.busy && stale(now)) letGo(now - idle.since);
      },
      Math.max(10, ackWaitMs / 6),
    );
  try {
    for await (const m of messages) {
      const arrived = buffered === undefined ? Number.NaN : buffered.take(m);
      const from = Date.now();
      // Its lease ran out, or all but, before it was reached: not run here, where it may run a
      // second time (a net: the age checks let go of it well before).
      if (from - arrived > ackWaitMs * 0.9) continue;
      idle.busy = true; // waiting for a free slot is not being stuck
      idle.since = from;
      // Awaited only when it waits (for a slot, the gate): most tasks start in this turn.
      const handing = onTask(m);
      if (handing) await handing;
      idle.since = Date.now();
      idle.busy = false;
      if (buffered === undefined) {
        if (idle.since - from > staleAfterMs && messages.getPending() > 0 && !stop?.handsBack()) {
          log.debug(
            { consumer: consumerName, waitedMs: idle.since - from, dropped: messages.getPending() },
            "a task waited past half its lease: buffered deliveries dropped, pulling again",
          );
          stopped.close();
          break;
        }
        continue;
      }
      if (stale(idle.since)) letGo(idle.since - from);
      if (outwaited) break;
    }
  } catch (error) {
    // The job's consumer deleted (the job ended) or lost with its stream: nothing left to pull.
    if (!isConsumerGone(error)) throw error;
    if (isStreamGone(error)) broker.setups.forget(nc);
    return "gone";
  } finally {
    await Effect.runPromise(Fiber.interrupt(watchdog));
    clearInterval(ageCheck);
    if (outwaited) stopped.close();
    stopped.dispose();
    await drained;
    // Each has started, or gone back (a failure of one is its worker's to log).
    await Promise.allSettled(handedOver);
  }
  return outwaited ? "again" : "ended";
};

/**
 * Ends a task loop that has had nothing for `stuckCheckMs` while its job's
 * tasks wait and no pull at all is registered at the consumer: its pulls
 * were lost (the consumer's leader moved) and nats.js did not notice. Seen
 * in the chaos suite: a node killed, every worker still running, the job
 * stalled for good with "4 tasks wait, 0 held". The loop's supervisor
 * starts it again, with a new pull. Nothing happens while messages flow or
 * the loop waits for a free slot (a busy worker does not pull).
 */
const restartIfNotPulling = (
  consumer: Awaited<ReturnType<JetStreamClient["consumers"]["get"]>>,
  consumerName: string,
  idle: { since: number; busy: boolean },
  restart: () => void,
  log: Logger,
): Promise<void> => {
  if (idle.busy || Date.now() - idle.since < stuckCheckMs) return Promise.resolve();
  return consumer.info().then(
    (info) => {
      if (info.num_pending === 0 || info.num_waiting > 0) return;
      log.warn(
        { consumer: consumerName, waiting: info.num_pending, held: info.num_ack_pending },
        "task loop has no pull at its consumer while tasks wait; pulling again",
      );
      restart();
    },
    // No answer (an election going on): the consume's own heartbeats handle that.
    (error) => log.debug({ consumer: consumerName, err: error }, "task loop check failed"),
  );
};

/** One signal per client, aborted when it closes: loops listen to it, and let go of it when they end. */
const closedSignals = new WeakMap<NatsConnection, AbortSignal>();

const closedSignal = (nc: NatsConnection): AbortSignal => {
  let closed = closedSignals.get(nc);
  if (!closed) {
    const controller = new AbortController();
    // Every loop of the client listens: many listeners, no leak.
    setMaxListeners(0, controller.signal);
    void nc.closed().then(() => controller.abort());
    closed = controller.signal;
    closedSignals.set(nc, closed);
  }
  return closed;
};

/**
 * Closes a pull loop's `messages` when `signal` aborts or the client closes,
 * which ends its `for await`. `dispose` (in the loop's `finally`) lets go of
 * both listeners. Not a reaction on the client's `closed()` promise per loop:
 * that lives as long as the client, and kept every ended loop's iterator (and
 * through it the job actor reading it) until the client closed.
 */
export const closeWhenEnded = (
  messages: ConsumerMessages,
  nc: NatsConnection,
  signal: AbortSignal,
  beforeClose?: () => void,
) => {
  const close = () => {
    beforeClose?.();
    // `close()` reports a failure to stop the pull as its value; the iterator ends either way.
    void messages.close();
  };
  const closed = closedSignal(nc);
  // Aborted while the loop set its consumer up: no abort event will come, and a loop left
  // running would hold up stop(), which waits for it before it closes the client.
  if (signal.aborted || closed.aborted) close();
  else {
    signal.addEventListener("abort", close, { once: true });
    closed.addEventListener("abort", close, { once: true });
  }
  return {
    close,
    dispose: () => {
      signal.removeEventListener("abort", close);
      closed.removeEventListener("abort", close);
    },
  };
};
