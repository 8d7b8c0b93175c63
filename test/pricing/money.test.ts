import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { formatUsd, parseUsd, usdNumber, usdNumberToNanos } from "../../src/pricing/money.ts";

describe("money", () => {
  it("parses USD decimal strings into nanodollars exactly", () => {
    expect(parseUsd("10")).toBe(10_000_000_000);
    expect(parseUsd("0.000123")).toBe(123_000);
    expect(parseUsd("0.000000001")).toBe(1);
    expect(parseUsd("-1.5")).toBe(-1_500_000_000);
    for (const bad of ["", "1.", ".5", "1e3", "abc", "1.0000000001", "99999999999"])
      expect(parseUsd(bad)).toBeNull();
  });

  it("formats the shortest exact decimal", () => {
    expect(formatUsd(10_000_000_000)).toBe("10");
    expect(formatUsd(123)).toBe("0.000000123");
    expect(formatUsd(0)).toBe("0");
    expect(formatUsd(-1_500_000_000)).toBe("-1.5");
  });

  it("round-trips every safe amount", () => {
    fc.assert(
      fc.property(fc.integer({ min: -9_000_000_000_000_000, max: 9_000_000_000_000_000 }), (n) => {
        expect(parseUsd(formatUsd(n))).toBe(n);
      }),
    );
  });

  it("reads OpenRouter's float cost through its shortest decimal, half up", () => {
    expect(usdNumberToNanos(0.000123)).toBe(123_000);
    expect(usdNumberToNanos(1.5e-7)).toBe(150);
    expect(usdNumberToNanos(0.0000000005)).toBe(1);
    expect(usdNumberToNanos(0.0000000004)).toBe(0);
    expect(usdNumberToNanos(123.456789)).toBe(123_456_789_000);
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 1_000_000_000_000 }), (n) => {
        expect(usdNumberToNanos(usdNumber(n))).toBe(n);
      }),
    );
  });
});
