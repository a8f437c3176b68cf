import type { QueueControls } from "../../src/adapters/queue-controls.ts";
import { gate } from "./wait.ts";

/** `controls` whose pool rewrites wait for `held` once they have been called (`reached`). */
export const heldBeforePool = (controls: QueueControls, held: Promise<void>) => {
  const reached = gate();
  const wrapped = new Proxy(controls, {
    get(target, key, receiver) {
      const value = Reflect.get(target, key, receiver);
      if (key !== "setPermits" || typeof value !== "function") return value;
      return async (...args: unknown[]) => {
        reached.open();
        await held;
        return value.apply(target, args);
      };
    },
  });
  return { controls: wrapped, reached: reached.opened };
};
