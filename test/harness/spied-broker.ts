import type { Broker } from "../../src/adapters/broker.ts";

/**
 * A broker behind a proxy that counts every method called on it, by name
 * (its supervision leases' and flow store's methods as `leases.<name>`, `flows.<name>`): the ledger tests
 * read to see which background loops ran and what they read. `around` may
 * replace a call (the call's count `n` starts at 1; `call` runs the real one).
 */
export const spiedBroker = (
  inner: Broker,
  around?: (key: string, n: number, args: unknown[], call: () => unknown) => unknown,
) => {
  const calls = new Map<string, number>();
  const spy = <T extends object>(target: T, prefix: string): T =>
    new Proxy(target, {
      get(obj, key, receiver) {
        const value = Reflect.get(obj, key, receiver);
        if (prefix === "" && key === "leases") return leases;
        if (prefix === "" && key === "flows") return flows;
        if (typeof value !== "function" || typeof key !== "string") return value;
        return (...args: unknown[]) => {
          const name = `${prefix}${key}`;
          const n = (calls.get(name) ?? 0) + 1;
          calls.set(name, n);
          const call = () => value.apply(obj, args);
          return around ? around(name, n, args, call) : call();
        };
      },
    });
  const leases = spy(inner.leases, "leases.");
  const flows = spy(inner.flows, "flows.");
  const broker = spy(inner, "");
  return { broker, calls };
};
