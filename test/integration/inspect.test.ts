/**
 * `inspect: true` against a real Stately relay (`createInspectorServer` from
 * `@statelyai/inspect/server`, the one its docs start). The runtime runs in a child
 * process (test/fixtures/inspect-job.ts) so that "stop() leaves nothing that keeps the
 * process alive" is checked the only way it can be: the process must end by itself.
 * The oracle for what the inspector shows is what a second client of the relay received,
 * compared with what the job's handler saw and the job's end as the child printed it.
 */
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import path from "node:path";
import { createInterface } from "node:readline";
import { createInspectorServer } from "@statelyai/inspect/server";
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import { closedAddress, freePort } from "../harness/nats-process.ts";
import { waitUntil } from "../harness/wait.ts";

const root = path.resolve(import.meta.dirname, "../..");
const FIXTURE = path.join(root, "test/fixtures/inspect-job.ts");
/** From spawn to exit: tsx start-up, one small job, stop. Far more than that means a handle keeps it alive. */
const EXIT_BOUND_MS = 20_000;

/** The little of `ws`'s client the receiver uses (the package ships no types). */
interface WsClient {
  readonly readyState: number;
  on(event: "open" | "close", listener: () => void): void;
  on(event: "error", listener: (error: Error) => void): void;
  on(event: "message", listener: (data: Buffer) => void): void;
  close(): void;
}
const { WebSocket } = createRequire(import.meta.url)("ws") as {
  WebSocket: new (url: string) => WsClient;
};

type Line = Record<string, unknown>;

/** Runs the fixture; resolves once it exited by itself, or kills it after the bound and says so. */
const runChild = async (inspectorUrl: string) => {
  const child = spawn(process.execPath, ["--import", "tsx", FIXTURE, inspectorUrl], {
    cwd: root,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines: Line[] = [];
  let stderr = "";
  createInterface({ input: child.stdout }).on("line", (text) => {
    try {
      lines.push(JSON.parse(text) as Line);
    } catch {
      lines.push({ text });
    }
  });
  child.stderr.on("data", (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const exit = await new Promise<{ code: number | null; signal: string | null; timedOut: boolean }>(
    (resolve) => {
      const timer = setTimeout(() => {
        child.kill("SIGKILL");
        resolve({ code: null, signal: "SIGKILL", timedOut: true });
      }, EXIT_BOUND_MS);
      child.once("exit", (code, signal) => {
        clearTimeout(timer);
        resolve({ code, signal, timedOut: false });
      });
    },
  );
  return { exit, lines, stderr };
};

describe("inspect: true (WebSocket inspector)", () => {
  let relay: { stop(): void } | undefined;
  let receiver: WsClient | undefined;
  let relayUrl = "";
  const received: Array<Record<string, unknown>> = [];

  beforeAll(async () => {
    const port = await freePort();
    relay = createInspectorServer({ port, autoOpen: false });
    relayUrl = `ws://127.0.0.1:${port}`;
    // The relay listens a moment after it is created: dial until a client is in.
    await waitUntil(
      () =>
        new Promise<boolean>((resolve) => {
          const socket = new WebSocket(relayUrl);
          socket.on("open", () => {
            receiver = socket;
            resolve(true);
          });
          socket.on("error", () => resolve(false));
        }),
      { timeoutMs: 10_000, message: `relay listening on ${relayUrl}` },
    );
    receiver?.on("message", (data) => received.push(JSON.parse(data.toString()) as Record<string, unknown>));
  });

  afterAll(() => {
    receiver?.close();
    relay?.stop();
  });

  it("sends the job actor's events to a listening relay, and the process ends after rt.stop()", async () => {
    const { exit, lines, stderr } = await runChild(relayUrl);
    expect(exit, `child: ${stderr}`).toEqual({ code: 0, signal: null, timedOut: false });
    const done = lines.find((l) => l.event === "done");
    expect(done).toMatchObject({ status: "succeeded", done: 3 });
    expect([...((done?.seen as number[] | undefined) ?? [])].sort()).toEqual([1, 2, 3]);
    expect(lines.some((l) => l.event === "stopped")).toBe(true);

    // The relay forwarded the job actor's birth and its snapshots up to the end.
    const jobActor = received.find((e) => e.type === "@xstate.actor" && e.name === `job:${done?.jobId}`);
    expect(
      jobActor,
      `actors seen: ${received.filter((e) => e.type === "@xstate.actor").map((e) => e.name)}`,
    ).toBeDefined();
    await waitUntil(
      () =>
        received.some((e) => {
          if (e.type !== "@xstate.snapshot" || e.sessionId !== jobActor?.sessionId) return false;
          const snapshot = e.snapshot as { value?: unknown; context?: { done?: number } };
          return JSON.stringify(snapshot.value).includes("succeeded") && snapshot.context?.done === 3;
        }),
      { timeoutMs: 5_000, message: "the relay got the job's final snapshot (succeeded, 3 done)" },
    );
    expect(received.some((e) => e.type === "@xstate.event" && e.sessionId === jobActor?.sessionId)).toBe(
      true,
    );
  });

  it("with nobody listening, the job runs, the miss is logged and the process ends after rt.stop()", async () => {
    const closed = await closedAddress();
    onTestFinished(closed.release);
    const closedUrl = `ws://${closed.host}:${closed.port}`;
    const { exit, lines, stderr } = await runChild(closedUrl);
    expect(exit, `child: ${stderr}`).toEqual({ code: 0, signal: null, timedOut: false });
    expect(lines.find((l) => l.event === "done")).toMatchObject({ status: "succeeded", done: 3 });
    const warning = lines.find((l) => l.level === 40 && String(l.msg).includes("inspector"));
    expect(warning, "a warning that no inspector listens").toMatchObject({ url: closedUrl });
    expect(String(warning?.err ? JSON.stringify(warning.err) : warning?.cause)).toContain("ECONNREFUSED");
  });
});
