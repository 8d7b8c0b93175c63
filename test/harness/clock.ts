import type { Clock } from "../../src/core/clock.ts";

/** The wall clock plus an offset a test moves forward: a TTL passes at once, not after a sleep. */
export function steppingClock(): Clock & { advance(ms: number): void } {
  let offset = 0;
  return {
    now: () => Date.now() + offset,
    advance(ms) {
      offset += ms;
    },
  };
}
