/** Milliseconds since the epoch; a service so tests can move time. */
export interface Clock {
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };

/**
 * Lets the process exit while `timer` is pending (Node's `unref`). Workers' timers are numbers with
 * no such method, and an isolate does not wait for them anyway.
 */
export function unrefTimer(timer: unknown): void {
  (timer as { unref?: () => void } | undefined)?.unref?.();
}
