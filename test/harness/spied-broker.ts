import type { Broker } from "../../src/adapters/broker.ts";

/**
 * A broker behind a proxy that counts every method called on it, by name:
 * the ledger tests read to see which background loops ran. `around` may
 * replace a call (the call's count `n` starts at 1; `call` runs the real one).
 */
export const spiedBroker = (
  inner: Broker,
  around?: (key: string, n: number, args: unknown[], call: () => unknown) => unknown,
) => {
  const calls = new Map<string, number>();
  const broker = new Proxy(inner, {
    get(target, key, receiver) {
      const value = Reflect.get(target, key, receiver);
      if (typeof value !== "function" || typeof key !== "string") return value;
      return (...args: unknown[]) => {
        const n = (calls.get(key) ?? 0) + 1;
        calls.set(key, n);
        const call = () => value.apply(target, args);
        return around ? around(key, n, args, call) : call();
      };
    },
  }) as Broker;
  return { broker, calls };
};
