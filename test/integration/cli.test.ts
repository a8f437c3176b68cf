/**
 * `jetstate-jobs`, the CLI, run as a user runs it (a child process, built
 * from the current sources: test/harness/cli.ts) against a nats-server of
 * this test's own. Its stdout (parsed `--json`), stderr and exit code are
 * checked against oracles the CLI does not share: the test's own runtime and
 * its handles, the handler's own ledger, and a raw NATS connection.
 */

import { readFileSync } from "node:fs";
import { type JetStreamManager, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import type { Worker } from "../../src/api/worker-options.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type BuiltCli, buildCli, type CliRun, runCli, runCliOnTerminal } from "../harness/cli.ts";
import { closedAddress } from "../harness/nats-process.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { gate, waitUntil } from "../harness/wait.ts";

/** What the handler did, by its own hand: one entry per run, before it answers. */
interface Run {
  readonly jobId: string;
  readonly index: number;
  readonly attempt: number;
  readonly ok: boolean;
}

describe("jetstate-jobs CLI", () => {
  let server: NatsServerHandle;
  let rt: Runtime;
  let cli: BuiltCli;
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  const ledger: Run[] = [];
  let broken = true;
  const failing = new Set([1, 4]);
  const workers: Worker[] = [];
  /** Every holder ever written to the leases bucket, read raw from a watch of the test's own. */
  const leaseHolders = new Set<string>();
  /** The job record as stored, read raw. */
  const rawRecord = async (id: string) => {
    const entry = await (await new Kvm(nc).open("jetstate_jobs")).get(id);
    return entry?.json<{ status: string; updatedAt: number }>();
  };

  const run = (args: readonly string[], env: Record<string, string> = {}): Promise<CliRun> =>
    runCli(cli.bin, args, { NATS_URL: server.url, ...env });
  const json = <T>(r: CliRun): T => {
    expect(r.code, `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`).not.toBeNull();
    return JSON.parse(r.stdout) as T;
  };
  const startWorker = (queue: string) => {
    const worker = rt.workers.start<number, number>({
      queue,
      concurrency: 4,
      handler: (task) => {
        const ok = !(broken && failing.has(task.index));
        ledger.push({ jobId: task.jobId, index: task.index, attempt: task.attempt, ok });
        if (!ok) throw new Error(`broken handler on task ${task.index}`);
        return task.payload * 2;
      },
    });
    workers.push(worker);
    return worker;
  };

  beforeAll(async () => {
    [server, cli] = await Promise.all([startNatsServer(), buildCli()]);
    // A short lease: a job the CLI redrives (it supervises nothing) is taken over by this runtime soon.
    rt = await createRuntime({ servers: server.url, logger: silentLogger(), jobs: { leaseMs: 2000 } });
    await rt.admin.provision(["cli", "spare", "stall", "tty"]);
    nc = await connect({ servers: server.url });
    jsm = await jetstreamManager(nc);
    const watch = await (await new Kvm(nc).open("jetstate_leases")).watch({ include: "history" });
    void (async () => {
      for await (const e of watch)
        if (e.value.length > 0) {
          const holder = (e.json() as { holder?: unknown }).holder;
          if (typeof holder === "string") leaseHolders.add(holder);
        }
    })();
  }, 60_000);

  afterAll(async () => {
    await Promise.all(workers.map((w) => w.stop()));
    await rt?.stop();
    await nc?.close();
    await server?.dispose();
    await cli?.remove();
  });

  it("--help documents every exit code; a bad flag is a usage error (2)", async () => {
    const [help, bad] = await Promise.all([run(["--help"]), run(["jobs", "ls", "--no-such-flag"])]);
    expect(help.code, help.stderr).toBe(0);
    for (const code of [0, 1, 2, 3, 4, 5])
      expect(help.stdout).toMatch(new RegExp(`^\\s+${code}\\s+\\S`, "m"));
    // Every variable the CLI's runtime reads: JETSTATE_REPLICAS (doctor's replicas wanted) too.
    for (const variable of ["NATS_URL", "NATS_CREDS", "JETSTATE_LOG_LEVEL", "JETSTATE_REPLICAS"])
      expect(help.stdout).toContain(variable);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toBe("error: unknown option '--no-such-flag'\n");
  });

  it("--version prints package.json's version, exit 0", async () => {
    const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
      version: string;
    };
    for (const flag of ["--version", "-V"]) {
      const r = await run([flag]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toBe(`${pkg.version}\n`);
    }
  });

  it("an invalid id is a usage error (2) with the runtime's reason; an unknown job is not found (3)", async () => {
    const [invalid, unknown] = await Promise.all([
      run(["jobs", "show", "not a job id"]),
      run(["jobs", "show", "jnosuchjob0000"]),
    ]);
    expect(invalid.code, invalid.stderr).toBe(2);
    // One line: the typed error's name and message, naming the field.
    expect(invalid.stderr.trim().split("\n")).toHaveLength(1);
    expect(invalid.stderr).toMatch(/^InvalidArgument: id: /);
    expect(unknown.code, unknown.stderr).toBe(3);
    expect(unknown.stderr).toMatch(/^NotFound: .*jnosuchjob0000/);
    expect(unknown.stdout).toBe("");
  });

  it("an unreachable server is exit 4 within --timeout, not a hang", async () => {
    const closed = await closedAddress();
    const r = await runCli(
      cli.bin,
      ["--timeout", "2", "jobs", "ls"],
      { NATS_URL: `nats://${closed.host}:${closed.port}` },
      20_000,
    ).finally(closed.release);
    expect(r.code, r.stderr).toBe(4);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    // The bound: the 2 s timeout, the process's own start and a stop bounded by the same timeout.
    expect(r.ms).toBeLessThan(12_000);
  });

  it("the issue's scenario: no worker → dead tasks → redrive → watch ends with 0", async () => {
    const job = await rt.jobs.submit({
      queue: "cli",
      tasks: [0, 1, 2, 3, 4, 5],
      maxDeliver: 2,
      backoff: [0],
      ackWaitMs: 2000,
    });

    // No worker alive on the queue: `jobs show` says so, and exits 0 (it answered).
    const idle = await run(["jobs", "show", job.id, "--json"]);
    const shown = json<{ job: { id: string; status: string }; reasons: { kind: string; message: string }[] }>(
      idle,
    );
    expect(idle.code, idle.stderr).toBe(0);
    expect(shown.job.id).toBe(job.id);
    expect(shown.reasons.map((r) => r.kind)).toContain("no-worker");
    const text = await run(["jobs", "show", job.id]);
    expect(text.code).toBe(0);
    expect(text.stdout).toContain("no worker is alive on queue cli");

    // A worker whose handler fails every delivery of tasks 1 and 4: they die.
    startWorker("cli");
    const ended = await job.done();
    expect(ended.dead).toBe(2);
    const diedInLedger = [
      ...new Set(ledger.filter((r) => r.jobId === job.id && !r.ok && r.attempt >= 2).map((r) => r.index)),
    ].sort();
    expect(diedInLedger).toEqual([1, 4]);

    // `dlq ls` lists exactly the tasks the ledger saw die.
    const dlq = await run(["dlq", "ls", job.id, "--json"]);
    expect(dlq.code, dlq.stderr).toBe(0);
    const letters = json<{ index: number; jobId: string; error: string }[]>(dlq);
    expect(letters.map((l) => l.index).sort()).toEqual(diedInLedger);
    for (const l of letters) expect(l.error).toContain(`broken handler on task ${l.index}`);
    const dlqText = await run(["dlq", "ls", job.id]);
    expect(dlqText.stdout.split("\n")[0]).toMatch(/^INDEX\s+TASK\s+DELIVERIES/);

    // `jobs show` of the ended job names its dead tasks and the next step.
    const failed = json<{ reasons: { kind: string; next?: string }[] }>(
      await run(["jobs", "show", job.id, "--json"]),
    );
    expect(failed.reasons.find((r) => r.kind === "dead-tasks")?.next).toContain(`dlq ls ${job.id}`);

    // The handler is fixed; the dead tasks go back; `jobs watch` follows the job to its success.
    broken = false;
    const before = ledger.length;
    // A task that did not die (the ledger: 0 succeeded) is not redriven: exit 3, nothing sent back.
    const notDead = await run(["dlq", "redrive", job.id, "0", "1"]);
    expect(notDead.code, notDead.stderr).toBe(3);
    expect(notDead.stderr).toContain("task 0 of job");
    expect(ledger.length).toBe(before);
    const redrive = await run(["dlq", "redrive", job.id, "--json"]);
    expect(redrive.code, redrive.stderr).toBe(0);
    expect(json<{ redriven: number[] }>(redrive).redriven.sort()).toEqual([1, 4]);
    const watch = await run(["jobs", "watch", job.id]);
    expect(watch.code, `${watch.stdout}\n${watch.stderr}`).toBe(0);
    const lines = watch.stdout.trim().split("\n");
    expect(lines.at(-1)).toMatch(/^succeeded 6\/6 done 6 failed 0 dead 0/);
    // The ledger: each redriven task ran again, and succeeded; no other task ran.
    const again = ledger.slice(before).filter((r) => r.jobId === job.id);
    expect([...new Set(again.map((r) => r.index))].sort()).toEqual([1, 4]);
    expect(again.every((r) => r.ok)).toBe(true);
    // Another runtime's view: the job's end as its submitter sees it.
    const handle = await rt.jobs.get(job.id);
    expect((await handle!.done()).status).toBe("succeeded");
  });

  it("jobs watch of a failed job exits 1; jobs ls lists it as the submitter sees it", async () => {
    broken = true;
    const job = await rt.jobs.submit({ queue: "cli", tasks: [0, 1], maxDeliver: 1, backoff: [0] });
    const final = await job.done();
    expect(final.status).toBe("failed");
    const watch = await run(["jobs", "watch", job.id, "--json"]);
    expect(watch.code).toBe(1);
    expect(json<{ status: string; dead: number }>(watch)).toMatchObject({
      status: "failed",
      dead: final.dead,
    });
    const listed = json<{ jobs: { id: string; status: string }[] }>(
      await run(["jobs", "ls", "--queue", "cli", "--status", "failed", "--json"]),
    );
    expect(listed.jobs.map((j) => j.id)).toContain(job.id);
    expect(listed.jobs.every((j) => j.status === "failed")).toBe(true);
    // A page's "more:" line gives the filter with the cursor: the line, run as printed, goes on.
    const firstPage = await run(["jobs", "ls", "--queue", "cli", "--limit", "1"]);
    const more = /^more: (.*)$/m.exec(firstPage.stdout)?.[1];
    expect(more, firstPage.stdout).toMatch(/^--queue cli --cursor \S+$/);
    const next = await run(["jobs", "ls", "--limit", "1", ...(more ?? "").split(" ")]);
    expect(next.code, next.stderr).toBe(0);
    broken = false;
  });

  it("jobs watch on a terminal redraws one line: the bar, counts that only grow, then the end", async () => {
    // Held until the watch drew its first frame (a CLI slow to start on a busy machine saw the
    // job already over), then a few seconds, so that the watch sees it move.
    const watching = gate();
    const slow = rt.workers.start<number, number>({
      queue: "tty",
      concurrency: 1,
      handler: async (task) => {
        await watching.opened;
        return new Promise((resolve) => setTimeout(() => resolve(task.payload), 50));
      },
    });
    workers.push(slow);
    const job = await rt.jobs.submit({ queue: "tty", tasks: Array.from({ length: 60 }, (_, i) => i) });
    const r = await runCliOnTerminal(cli.bin, ["jobs", "watch", job.id], { NATS_URL: server.url }, (out) => {
      if (out.includes("\r\x1b[2K")) watching.open();
    });
    expect(r.code, r.stdout).toBe(0);
    const frames = r.stdout.split("\r\x1b[2K").slice(1);
    const answered = frames.map((f) => Number(/\] +\d+% \w+ (\d+)\/60 /.exec(f)?.[1]));
    expect(frames.length, r.stdout).toBeGreaterThan(1);
    expect(answered.every((n, i) => Number.isInteger(n) && (i === 0 || n >= (answered[i - 1] ?? 0)))).toBe(
      true,
    );
    // While it ran, a rate and an ETA (its value is the job machine's; here only that it is shown).
    expect(
      frames.some((f) => / [1-9][\d.]* tasks\/s eta \d+ (ms|s)$/.test(f.trim())),
      r.stdout,
    ).toBe(true);
    expect(frames.at(-1)).toMatch(
      /^\[#{30}\] 100% succeeded 60\/60 done 60 failed 0 dead 0 .* tasks\/s eta /,
    );
    expect((await job.done()).status).toBe("succeeded");
  });

  it("jobs cancel ends the job with the reason given, as the submitter's handle sees it", async () => {
    const job = await rt.jobs.submit({ queue: "spare", tasks: [1, 2, 3] });
    const r = await run(["jobs", "cancel", job.id, "--reason", "operator says stop", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    expect(json<{ status: string; reason: string }>(r)).toMatchObject({
      status: "failed",
      reason: "cancelled: operator says stop",
    });
    const seen = await job.done();
    expect(seen).toMatchObject({ status: "failed", reason: "cancelled: operator says stop" });
  });

  it("agents ls lists an agent registered by the test's runtime, with its target", async () => {
    await rt.agents.register({ agentId: "cli-agent", targets: ["east", "west"], current: "west" });
    const r = await run(["agents", "ls", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    expect(json<{ agentId: string; current: string }[]>(r)).toContainEqual(
      expect.objectContaining({ agentId: "cli-agent", current: "west" }),
    );
  });

  it("workers ls lists the test's live worker; cleanup --dry-run answers as a dry run", async () => {
    const worker = workers[0] ?? startWorker("cli");
    const listed = json<{ id: string; queue: string; pid: number }[]>(
      await run(["workers", "ls", "--queue", "cli", "--json"]),
    );
    expect(listed.map((w) => w.id)).toContain(worker.id);
    expect(listed.find((w) => w.id === worker.id)).toMatchObject({ queue: "cli", pid: process.pid });
    const report = json<{ dryRun: boolean }>(await run(["cleanup", "--dry-run", "--json"]));
    expect(report.dryRun).toBe(true);
  });

  it("a stalled job: jobs show says since when, from the record as stored", async () => {
    const job = await rt.jobs.submit({ queue: "stall", tasks: [1], stallAfterMs: 300 });
    await waitUntil(async () => (await rawRecord(job.id))?.status === "stalled", {
      timeoutMs: 15_000,
      message: "the job's record says stalled",
    });
    const raw = await rawRecord(job.id);
    const r = await run(["jobs", "show", job.id, "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const shown = json<{ reasons: { kind: string; message: string }[] }>(r);
    expect(shown.reasons.map((x) => x.kind).sort()).toEqual(["no-worker", "stalled"]);
    expect(shown.reasons.find((x) => x.kind === "stalled")?.message).toContain(
      `stalled since ${new Date(raw?.updatedAt ?? 0).toISOString()}`,
    );
  });

  it("jobs watch of a job nobody supervises watches only; Ctrl-C ends it with 130", async () => {
    // Another prefix, where no runtime takes jobs over: its submitter stops, its lease runs out.
    const orphaner = await createRuntime({
      servers: server.url,
      prefix: "orphan",
      logger: silentLogger(),
      roles: "submitter",
      jobs: { leaseMs: 300 },
    });
    const job = await orphaner.jobs.submit({ queue: "orphan", tasks: [1] });
    await orphaner.stop();
    const holders: string[] = [];
    const watch = await (await new Kvm(nc).open("orphan_leases")).watch({ include: "history" });
    void (async () => {
      for await (const e of watch)
        if (e.value.length > 0) holders.push(String(e.json<{ holder?: string }>().holder));
    })();
    // Longer than a third of the CLI's lease (10 s): a runtime taking jobs over would have renewed by then.
    const r = await runCli(
      cli.bin,
      ["--prefix", "orphan", "jobs", "watch", job.id],
      { NATS_URL: server.url },
      20_000,
      {
        afterMs: 6000,
        signal: "SIGINT",
      },
    );
    watch.stop();
    expect(r.code, r.stderr).toBe(130);
    expect(r.stdout).toMatch(/^running 0\/1 /);
    expect(holders.length).toBeGreaterThan(0);
    expect(holders.filter((h) => h.startsWith("jetstate-cli-"))).toEqual([]);
  });

  it("no CLI run ever held a supervision lease (the leases bucket, watched raw)", () => {
    expect(leaseHolders.size).toBeGreaterThan(0);
    expect([...leaseHolders].filter((h) => h.startsWith("jetstate-cli-"))).toEqual([]);
  });

  it("doctor: a healthy server is exit 0, with the streams and replica counts the server reports raw", async () => {
    const r = await run(["doctor", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const d = json<{
      server: { version: string; jetstream: boolean };
      stores: { name: string; present: boolean; replicas?: number; consumers?: number; firstUse?: string }[];
      roles: { role: string; allowed: boolean }[];
      problems: unknown[];
    }>(r);
    expect(d.problems).toEqual([]);
    expect(d.server).toMatchObject({ version: await server.version(), jetstream: true });
    for (const s of d.stores) {
      const raw = await jsm.streams.info(s.name).catch(() => undefined);
      // Made on first use (the answers bucket, a queue's delayed stream): missing, not in use yet.
      if (raw === undefined)
        expect(s, s.name).toMatchObject({ present: false, firstUse: expect.any(String) });
      else expect(s, s.name).toMatchObject({ present: true, replicas: raw.config.num_replicas });
    }
    expect(d.stores.map((s) => s.name)).toEqual(
      expect.arrayContaining([
        "jetstate_results",
        "jetstate_dead",
        "KV_jetstate_jobs",
        "jetstate_advisories_spare",
      ]),
    );
    expect(d.roles.every((role) => role.allowed)).toBe(true);
  });

  it("doctor: a deleted jetstate stream is a problem that names it (exit 5)", async () => {
    await jsm.streams.delete("jetstate_advisories_spare");
    const r = await run(["doctor"]);
    expect(r.code, r.stderr).toBe(5);
    expect(r.stdout).toMatch(
      /PROBLEM: stream jetstate_advisories_spare is missing\n\s+fix: .*provision\(\["spare"\]\)/,
    );
  });
});
