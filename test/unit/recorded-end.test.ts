/**
 * `recordedEnd`: the wait of a handle whose actor could not write its end.
 * The oracle is the fake store: what it holds decides the answer.
 */
import { describe, expect, it } from "vitest";
import { recordedEnd } from "../../src/api/recorded-end.ts";
import type { RuntimeCore } from "../../src/api/runtime-core.ts";
import type { JobRecord } from "../../src/kernel/job-record.ts";
import { LinkedControllers } from "../../src/kernel/signals.ts";
import { within } from "../harness/wait.ts";
import { fakeJobPort, record } from "./fake-job-port.ts";

const sources = (port: ReturnType<typeof fakeJobPort>["port"], stop: AbortController) => {
  const listeners = new Set<(record: JobRecord) => void>();
  return {
    listeners,
    sources: {
      core: { stopLinks: new LinkedControllers(stop.signal) } as unknown as RuntimeCore,
      broker: port,
      watch: (listener: (record: JobRecord) => void) => {
        listeners.add(listener);
        return () => listeners.delete(listener);
      },
      readEveryMs: 20,
    },
  };
};

describe("recordedEnd", () => {
  it("answers the end once the record holds one, heard through the watch", async () => {
    const fake = fakeJobPort();
    fake.put(record({ phase: "committed", status: "running" }));
    const { sources: s, listeners } = sources(fake.port, new AbortController());
    let answered: JobRecord | undefined;
    const end = recordedEnd(s, "j1", "s1").then((r) => {
      answered = r;
      return r;
    });
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(answered).toBeUndefined();
    const ended = record({ phase: "committed", status: "succeeded" });
    for (const listener of listeners) listener(ended);
    expect(await end).toEqual(ended);
  });

  it("answers at once a record another submit of the key made again, running", async () => {
    const fake = fakeJobPort();
    const made = record({ phase: "committed", status: "running", submitId: "s2" });
    fake.put(made);
    const stop = new AbortController();
    const { sources: s } = sources(fake.port, stop);
    const end = recordedEnd(s, "j1", "s1");
    end.catch(() => undefined);
    try {
      expect(await within(end, 2000)).toEqual(made);
    } finally {
      stop.abort(); // a wait still running (this test failing) ends
    }
  });
});
