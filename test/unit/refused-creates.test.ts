/**
 * `ensureStream` for a user refused the create (a least-privilege runtime,
 * the stream gone with the server's store): the create is asked for once a
 * minute at most, the stream only looked at in between; the refusal said
 * once at warn; the stream found again ends the spell.
 */
import type { JetStreamManager, StreamInfo } from "@nats-io/jetstream";
import { JetStreamApiError } from "@nats-io/jetstream";
import { PermissionViolationError, RequestError } from "@nats-io/transport-node";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ensureStream, Replicas } from "../../src/adapters/nats/streams.ts";
import { PermanentBrokerError } from "../../src/kernel/errors.ts";
import { capturedLog } from "../harness/log-lines.ts";

const name = "t_results";
const notFound = () => new JetStreamApiError({ code: 404, err_code: 10059, description: "stream not found" });
const refusal = () => {
  const subject = `$JS.API.STREAM.CREATE.${name}`;
  const violation = new PermissionViolationError(
    `Permissions Violation for Publish to "${subject}"`,
    "publish",
    subject,
  );
  return new RequestError(violation.message, { cause: violation });
};

/** A manager whose stream is there or not (`exists`), whose creates are refused, counting both. */
const fakeManager = () => {
  const state = { exists: false, infos: 0, creates: 0 };
  const info = { config: { name, num_replicas: 1 } } as unknown as StreamInfo;
  const jsm = {
    streams: {
      info: async () => {
        state.infos++;
        if (!state.exists) throw notFound();
        return info;
      },
      add: async () => {
        state.creates++;
        throw refusal();
      },
    },
  } as unknown as JetStreamManager;
  return { jsm, state };
};

describe("a create refused to this runtime's user", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it("is asked again only after a minute, looked at in between, said once at warn; found, the spell ends", async () => {
    const log = capturedLog("debug");
    const replicas = new Replicas(1, log.logger);
    const { jsm, state } = fakeManager();
    const ensure = () =>
      ensureStream(jsm, { name, subjects: ["t.results.>"] }, replicas).then(
        () => "made",
        (error: unknown) => error,
      );

    const first = await ensure();
    expect(first).toBeInstanceOf(PermanentBrokerError);
    expect(first).toMatchObject({ notProvisioned: name });
    // Every 5 s for 55 s (a loop's backoff at its longest): looked at, never asked again.
    for (let i = 0; i < 11; i++) {
      vi.advanceTimersByTime(5_000);
      expect(await ensure()).toMatchObject({ notProvisioned: name });
    }
    expect(state.creates).toBe(1);
    vi.advanceTimersByTime(5_000);
    await ensure();
    expect(state.creates).toBe(2);
    const warned = () =>
      log.lines.filter((l) => l.level >= 40 && /an admin must provision/.test(l.msg)).length;
    expect(warned()).toBe(1);

    // An admin made it: found, and the spell over; the next refusal (another reset) is said again.
    state.exists = true;
    expect(await ensure()).toBe("made");
    state.exists = false;
    await ensure();
    expect({ creates: state.creates, warned: warned() }).toEqual({ creates: 3, warned: 2 });
  });
});
