/**
 * The controllers a worker's job pull loops share one stop listener through:
 * each is aborted with the runtime's reason, at once when linked after it,
 * and never once unlinked. Oracle: the controllers' own signals.
 */
import { getEventListeners } from "node:events";
import { describe, expect, it } from "vitest";
import { LinkedControllers } from "../../src/kernel/signals.ts";

describe("LinkedControllers", () => {
  it("aborts every linked controller with the parent's reason, and one linked after at once", () => {
    const parent = new AbortController();
    const linked = new LinkedControllers(parent.signal);
    const [a, b, gone] = [linked.link(), linked.link(), linked.link()];
    linked.unlink(gone);
    b.abort("own");
    parent.abort("runtime stopped");
    expect(a.signal.reason).toBe("runtime stopped");
    expect(b.signal.reason).toBe("own");
    expect(gone.signal.aborted).toBe(false);
    expect(linked.link().signal.reason).toBe("runtime stopped");
  });

  it("with a signal of its own: aborted by it, with its reason, until unlinked", () => {
    const parent = new AbortController();
    const linked = new LinkedControllers(parent.signal);
    const [own, other] = [new AbortController(), new AbortController()];
    const a = linked.link(own.signal);
    const gone = linked.link(other.signal);
    linked.unlink(gone);
    own.abort("job ended");
    other.abort("job ended");
    expect(a.signal.reason).toBe("job ended");
    expect(gone.signal.aborted).toBe(false);
    expect(linked.link(own.signal).signal.reason).toBe("job ended");
    parent.abort("runtime stopped");
    expect(linked.link(new AbortController().signal).signal.reason).toBe("runtime stopped");
  });

  it("adds one listener to the parent however many it links", () => {
    const parent = new AbortController();
    let listeners = 0;
    const add = parent.signal.addEventListener.bind(parent.signal);
    parent.signal.addEventListener = ((...args: Parameters<typeof add>) => {
      listeners++;
      return add(...args);
    }) as typeof add;
    const linked = new LinkedControllers(parent.signal);
    for (let n = 0; n < 100; n++) linked.link();
    expect(listeners).toBe(1);
  });

  it("the parent's abort also removes each controller's listener on its own signal", () => {
    const parent = new AbortController();
    const linked = new LinkedControllers(parent.signal);
    const own = new AbortController();
    const controllers = [linked.link(own.signal), linked.link(own.signal)];
    expect(getEventListeners(own.signal, "abort")).toHaveLength(2);
    parent.abort(new Error("stopping"));
    expect(controllers.every((c) => c.signal.aborted)).toBe(true);
    expect(getEventListeners(own.signal, "abort")).toHaveLength(0);
    // Unlinked after the parent's abort: nothing left to remove, nothing thrown.
    for (const controller of controllers) linked.unlink(controller);
  });
});
