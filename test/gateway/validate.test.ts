import { describe, expect, it } from "vitest";
import { nestsDeeperThan } from "../../src/gateway/validate.ts";

const bytes = (text: string) => new Uint8Array(Buffer.from(text));

/** Nesting depth of a parsed JSON value: 0 for a scalar, 1 for a flat array or object. */
function depthOf(v: unknown): number {
  if (typeof v !== "object" || v === null) return 0;
  return 1 + Math.max(0, ...Object.values(v).map(depthOf));
}

/** A value of nesting `depth`, with strings full of what could fool a scan: quotes, backslashes, brackets. */
function nested(depth: number, seed: number): unknown {
  const tricky = ['[[{{"', '\\"]]', "\\", '\\\\"', "}]\\\\", "plain", "ü🙂[", ""];
  const s = tricky[seed % tricky.length] as string;
  if (depth === 0) return s.repeat(seed % 3);
  const inner = nested(depth - 1, seed * 7 + 3);
  return seed % 2 ? [s, inner, `${s}]`] : { [s]: inner, "x\\": s };
}

describe("the request body's nesting limit", () => {
  it("counts the brackets of arrays and objects, not those inside strings", () => {
    for (let depth = 1; depth <= 12; depth++) {
      for (let seed = 0; seed < 40; seed++) {
        const text = JSON.stringify(nested(depth, seed));
        expect(depthOf(JSON.parse(text))).toBe(depth);
        expect(nestsDeeperThan(bytes(text), depth - 1), text).toBe(true);
        expect(nestsDeeperThan(bytes(text), depth), text).toBe(false);
      }
    }
  });

  it("stops at the limit, and leaves text that is not JSON to the parser", () => {
    expect(nestsDeeperThan(bytes(`${"[".repeat(129)}${"]".repeat(129)}`), 128)).toBe(true);
    expect(nestsDeeperThan(bytes(`${"[".repeat(128)}${"]".repeat(128)}`), 128)).toBe(false);
    expect(nestsDeeperThan(bytes("[".repeat(2_000_000)), 128)).toBe(true);
    expect(nestsDeeperThan(bytes(`{"a":"never closed [[[[${"[".repeat(200)}`), 128)).toBe(false);
  });
});
