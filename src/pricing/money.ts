/**
 * Money is an integer number of NANODOLLARS (1e-9 USD) everywhere on the money path, held in a JS
 * number that must stay a safe integer (Redis Lua's doubles are exact to 2^53, about $9M per
 * balance). On the wire it is a USD decimal string ("10", "0.000000123").
 */
export type Nanos = number;

export const NANOS_PER_USD = 1_000_000_000;
const DECIMALS = 9;
const USD_PATTERN = /^(-)?(\d+)(?:\.(\d+))?$/;

/** "10", "0.000123", "-1.5" → nanodollars; null for anything else, more than 9 decimals, or too large. */
export function parseUsd(s: string): Nanos | null {
  const m = USD_PATTERN.exec(s.trim());
  if (!m) return null;
  const [, sign, whole = "0", frac = ""] = m;
  if (frac.length > DECIMALS) return null;
  const n = Number(whole) * NANOS_PER_USD + Number(frac.padEnd(DECIMALS, "0"));
  if (!Number.isSafeInteger(n)) return null;
  return sign && n !== 0 ? -n : n;
}

/** Nanodollars → the shortest exact USD decimal string. */
export function formatUsd(n: Nanos): string {
  const sign = n < 0 ? "-" : "";
  const abs = Math.abs(n);
  const whole = Math.floor(abs / NANOS_PER_USD);
  const frac = (abs % NANOS_PER_USD).toString().padStart(DECIMALS, "0").replace(/0+$/, "");
  return `${sign}${whole}${frac ? `.${frac}` : ""}`;
}

/** A JS number of USD, only for the wire's `cost` field (as OpenRouter sends it). */
export function usdNumber(n: Nanos): number {
  return Number(formatUsd(n));
}

/** OpenRouter's float `usage.cost` → nanodollars, from its shortest decimal form, rounded half up. */
export function usdNumberToNanos(x: number): Nanos {
  if (!Number.isFinite(x) || x <= 0) return 0;
  const m = /^(\d+)(?:\.(\d+))?(?:e([+-]\d+))?$/.exec(x.toString());
  if (!m) return 0;
  const [, whole = "0", frac = "", exp = "0"] = m;
  const digits = BigInt(whole + frac);
  const shift = Number(exp) - frac.length + DECIMALS; // value × 1e9 = digits × 10^shift
  if (shift >= 0) return Number(digits * 10n ** BigInt(shift));
  const divisor = 10n ** BigInt(-shift);
  const q = digits / divisor;
  return Number((digits % divisor) * 2n >= divisor ? q + 1n : q);
}
