import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import path from "node:path";
import { createInterface } from "node:readline";
import { delay } from "../harness/wait.ts";

const root = path.resolve(import.meta.dirname, "../..");
const FIXTURE = path.join(root, "test/fixtures/chaos-worker.ts");
const READY_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 40_000;

export interface WorkerPoolOptions {
  readonly servers: readonly string[];
  readonly queue: string;
  /** Where each worker's ledger and log go. */
  readonly dir: string;
  readonly concurrency: number;
  readonly taskMs: number;
}

/** One worker process (test/fixtures/chaos-worker.ts). */
export interface WorkerProcess {
  readonly seq: number;
  readonly pid: number;
  readonly ledgerFile: string;
  readonly logFile: string;
  /** Resolves once the worker said it started; rejects if it exits first or takes too long. */
  readonly ready: Promise<void>;
  readonly exited: Promise<void>;
  readonly alive: boolean;
  /** Started and not exited: handling tasks. */
  readonly working: boolean;
}

class Worker implements WorkerProcess {
  readonly pid: number;
  readonly ready: Promise<void>;
  readonly exited: Promise<void>;
  #exit: string | undefined;
  #stderr = "";
  #ready = false;

  constructor(
    readonly seq: number,
    readonly ledgerFile: string,
    readonly logFile: string,
    readonly child: ChildProcessWithoutNullStreams,
  ) {
    if (child.pid === undefined) throw new Error(`worker ${seq} did not start`);
    this.pid = child.pid;
    child.stderr.on("data", (chunk: Buffer) => {
      this.#stderr = (this.#stderr + chunk.toString()).slice(-4000);
    });
    this.exited = new Promise((resolve) =>
      child.once("exit", (code, signal) => {
        this.#exit = `code ${code} signal ${signal}`;
        resolve();
      }),
    );
    this.ready = this.#readyLine();
    // Whoever waits for the worker gets the rejection; a worker killed (or stopped) while it
    // was starting, whose start nobody waits for, is no unhandled error of the test.
    this.ready.then(
      () => {
        this.#ready = true;
      },
      () => undefined,
    );
  }

  get alive(): boolean {
    return this.#exit === undefined;
  }

  get working(): boolean {
    return this.#ready && this.alive;
  }

  /** Why the worker is gone, with the tail of its stderr. */
  describeExit(): string {
    return `worker ${this.seq} (pid ${this.pid}) exited (${this.#exit ?? "running"}): ${this.#stderr}`;
  }

  #readyLine(): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`worker ${this.seq} not ready within ${READY_TIMEOUT_MS} ms`)),
        READY_TIMEOUT_MS,
      );
      createInterface({ input: this.child.stdout }).on("line", (line) => {
        if (line.includes('"event":"ready"')) {
          clearTimeout(timer);
          resolve();
        }
      });
      void this.exited.then(() => {
        clearTimeout(timer);
        reject(new Error(this.describeExit()));
      });
    });
  }
}

/**
 * The suite's worker processes: started, SIGKILLed and replaced, stopped.
 * Every process ever started keeps its own ledger file, so the ledgers of
 * killed workers count too.
 */
export class WorkerPool {
  readonly #options: WorkerPoolOptions;
  readonly #all: Worker[] = [];

  constructor(options: WorkerPoolOptions) {
    this.#options = options;
  }

  /** Starts one worker process; its `ready` says when it runs. */
  start(): WorkerProcess {
    const seq = this.#all.length + 1;
    const ledgerFile = path.join(this.#options.dir, `ledger-worker-${seq}.txt`);
    const logFile = path.join(this.#options.dir, `worker-${seq}.log`);
    // `node --import tsx`, not the tsx CLI: the CLI runs the script in a second node process,
    // which a SIGKILL to the CLI would orphan instead of killing.
    const child = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        FIXTURE,
        this.#options.servers.join(","),
        this.#options.queue,
        ledgerFile,
        logFile,
        String(this.#options.concurrency),
        String(this.#options.taskMs),
      ],
      { cwd: root, stdio: ["pipe", "pipe", "pipe"] },
    );
    const worker = new Worker(seq, ledgerFile, logFile, child);
    this.#all.push(worker);
    return worker;
  }

  /** Starts `n` workers and waits until all of them run. */
  async startMany(n: number): Promise<void> {
    const started = Array.from({ length: n }, () => this.start());
    await Promise.all(started.map((w) => w.ready));
  }

  get alive(): readonly WorkerProcess[] {
    return this.#all.filter((w) => w.alive);
  }

  /** Every ledger file, of live and dead workers alike. */
  get ledgerFiles(): string[] {
    return this.#all.map((w) => w.ledgerFile);
  }

  get started(): number {
    return this.#all.length;
  }

  /** SIGKILLs the worker and waits for its exit. */
  async kill(worker: WorkerProcess): Promise<void> {
    const w = this.#own(worker);
    if (w.alive) w.child.kill("SIGKILL");
    await w.exited;
  }

  /** Stops every live worker (SIGTERM: in-flight tasks finish), SIGKILL after a bound. */
  async stopAll(): Promise<void> {
    await Promise.all(
      this.#all
        .filter((w) => w.alive)
        .map(async (w) => {
          w.child.kill("SIGTERM");
          const stopped = await Promise.race([
            w.exited.then(() => true),
            delay(STOP_TIMEOUT_MS).then(() => false),
          ]);
          if (!stopped) {
            process.stderr.write(`worker ${w.seq} did not stop in ${STOP_TIMEOUT_MS} ms: SIGKILL\n`);
            w.child.kill("SIGKILL");
            await w.exited;
          }
        }),
    );
  }

  #own(worker: WorkerProcess): Worker {
    const w = this.#all.find((x) => x === worker);
    if (w === undefined) throw new Error(`worker ${worker.seq} is not one of this pool's`);
    return w;
  }
}
