import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type Catalog, type CatalogModel, createCatalog } from "../../src/pricing/catalog.ts";
import { computeCost, estimateReservation } from "../../src/pricing/cost.ts";
import { tokenCounter } from "../../src/pricing/tokens.ts";

const catalog = createCatalog() as Catalog;
const model = (id: string) => catalog.resolve(id) as CatalogModel;
const usage = (
  u: Partial<{
    promptTokens: number;
    cachedTokens: number;
    cacheWriteTokens: number;
    completionTokens: number;
    reasoningTokens: number;
    upstreamCostUsd: number;
  }>,
) => ({
  promptTokens: 0,
  cachedTokens: 0,
  cacheWriteTokens: 0,
  completionTokens: 0,
  reasoningTokens: 0,
  ...u,
});

describe("cost on each pricing path", () => {
  it("plain: input and output at list price, markup on top", () => {
    // gpt-4.1: $2 in, $8 out per 1M. 1000 in + 500 out = 0.002 + 0.004 = $0.006
    const c = computeCost(model("gpt-4.1"), usage({ promptTokens: 1000, completionTokens: 500 }), {
      markupBps: 500,
    });
    expect(c.base).toBe(6_000_000);
    expect(c.surcharge).toBe(300_000);
    expect(c.total).toBe(6_300_000);
    expect(c.inputPricePerToken).toBe("0.000002");
    expect(c.outputPricePerToken).toBe("0.000008");
  });

  it("cached: prompt_tokens include cached_tokens, which bill at the cached rate", () => {
    // gpt-4.1-mini: $0.40 in, $0.10 cached. 1000 prompt of which 800 cached: 200×0.4 + 800×0.1 = 160 µ$ = 0.00016
    const c = computeCost(model("gpt-4.1-mini"), usage({ promptTokens: 1000, cachedTokens: 800 }), {
      markupBps: 0,
    });
    expect(c.base).toBe(160_000);
    expect(c.cacheDiscount).toBe(240_000); // 800 × (0.4 − 0.1) per 1M
    expect(c.inputTokens).toBe(200);
    expect(c.cachedTokens).toBe(800);
  });

  it("reasoning: included in completion_tokens and billed as output, once", () => {
    // o3: $8 out. 100 completion of which 80 reasoning → 100 × 8 = 800 µ$
    const c = computeCost(model("openai/o3"), usage({ completionTokens: 100, reasoningTokens: 80 }), {
      markupBps: 0,
    });
    expect(c.base).toBe(800_000);
    expect(c.outputTokens).toBe(100);
  });

  it("OpenRouter: the upstream's usage.cost is the base", () => {
    const c = computeCost(
      model("anthropic/claude-sonnet-4"),
      usage({ promptTokens: 10, completionTokens: 10 }),
      {
        markupBps: 1000,
        upstreamCostUsd: 0.0123,
      },
    );
    expect(c.base).toBe(12_300_000);
    expect(c.surcharge).toBe(1_230_000);
    // Without a reported cost it prices from the catalog, cache writes at the write rate.
    const listed = computeCost(
      model("anthropic/claude-sonnet-4"),
      usage({ promptTokens: 1000, cacheWriteTokens: 1000 }),
      {
        markupBps: 0,
      },
    );
    expect(listed.base).toBe(3_750_000);
  });

  it("OpenRouter :free: a reported cost of 0 is free; a paid model reporting 0 is priced from the list", () => {
    const used = usage({ promptTokens: 1000, completionTokens: 1000 });
    const reportedZero = { markupBps: 1000, upstreamCostUsd: 0 };
    const free = catalog.resolve("anthropic/claude-sonnet-4:free", "openrouter") as CatalogModel;
    expect(computeCost(free, used, reportedZero)).toMatchObject({ base: 0, surcharge: 0, total: 0 });
    // $3 in, $15 out per 1M: 1000 + 1000 tokens = $0.018.
    const paid = computeCost(model("anthropic/claude-sonnet-4"), used, reportedZero);
    expect(paid.base).toBe(18_000_000);
    // A :free call that reports no cost at all is priced from the list, as any other.
    const silent = computeCost(free, used, { markupBps: 0 });
    expect(silent.base).toBe(18_000_000);
  });

  it("Relace apply", () => {
    // $0.85 in, $1.25 out per 1M: 2000 in + 1000 out = 1700 + 1250 µ$ = 2950 µ$
    const c = computeCost(model("relace-apply-3"), usage({ promptTokens: 2000, completionTokens: 1000 }), {
      markupBps: 0,
    });
    expect(c.base).toBe(2_950_000);
  });

  it("rounds up to the nanodollar, per call, towards the house", () => {
    // $0.000001 per 1M tokens is one picodollar a token: 1000 tokens make one nanodollar.
    const cheap: CatalogModel = {
      ...model("gpt-4.1-nano"),
      micro: { input: 1, cachedInput: 1, cacheWrite: 1, output: 1 },
    };
    expect(computeCost(cheap, usage({ promptTokens: 1 }), { markupBps: 0 }).base).toBe(1);
    expect(computeCost(cheap, usage({ promptTokens: 1000 }), { markupBps: 0 }).base).toBe(1);
    expect(computeCost(cheap, usage({ promptTokens: 1001 }), { markupBps: 0 }).base).toBe(2);
    expect(computeCost(cheap, usage({ promptTokens: 1 }), { markupBps: 1 })).toMatchObject({
      base: 1,
      surcharge: 1,
      total: 2,
    });
    expect(computeCost(model("gpt-4.1-nano"), usage({ promptTokens: 1 }), { markupBps: 0 }).base).toBe(100);
    expect(computeCost(model("gpt-4.1-nano"), usage({}), { markupBps: 300 }).total).toBe(0);
  });
});

describe("the rounding rule, over random calls", () => {
  const micro = fc.integer({ min: 0, max: 200_000_000 });
  const tokens = fc.integer({ min: 0, max: 2_000_000 });
  const arbitraryModel = fc
    .record({ input: micro, cachedInput: micro, cacheWrite: micro, output: micro })
    .map((m): CatalogModel => ({ ...model("gpt-4.1"), micro: m }));

  it("total = base + surcharge; base is the exact price rounded up by less than a nanodollar; surcharge = ceil(base × bps / 1e4)", () => {
    fc.assert(
      fc.property(
        arbitraryModel,
        tokens,
        tokens,
        tokens,
        fc.integer({ min: 0, max: 10_000 }),
        (m, p, cached, out, bps) => {
          const u = usage({ promptTokens: p + cached, cachedTokens: cached, completionTokens: out });
          const c = computeCost(m, u, { markupBps: bps });
          const exactPicos =
            BigInt(p) * BigInt(m.micro.input) +
            BigInt(cached) * BigInt(m.micro.cachedInput) +
            BigInt(out) * BigInt(m.micro.output);
          expect(c.total).toBe(c.base + c.surcharge);
          expect(BigInt(c.base) * 1000n >= exactPicos).toBe(true);
          expect(BigInt(c.base) * 1000n - exactPicos < 1000n).toBe(true);
          expect(BigInt(c.surcharge) * 10_000n >= BigInt(c.base) * BigInt(bps)).toBe(true);
          expect(BigInt(c.surcharge - 1) * 10_000n < BigInt(c.base) * BigInt(bps)).toBe(true);
          expect(Number.isSafeInteger(c.total)).toBe(true);
        },
      ),
    );
  });

  it("is monotonic in tokens, and zero tokens cost zero", () => {
    fc.assert(
      fc.property(arbitraryModel, tokens, tokens, fc.integer({ min: 0, max: 10_000 }), (m, a, b, bps) => {
        const [lo, hi] = a <= b ? [a, b] : [b, a];
        const at = (n: number) =>
          computeCost(m, usage({ promptTokens: n, completionTokens: n }), { markupBps: bps }).total;
        expect(at(lo)).toBeLessThanOrEqual(at(hi));
        expect(at(0)).toBe(0);
      }),
    );
  });
});

describe("reservation estimate", () => {
  const samples = {
    prose: "The quick brown fox jumps over the lazy dog. ".repeat(60),
    code: "export function add(a: number, b: number): number {\n  return a + b; // sum\n}\n".repeat(30),
    json: JSON.stringify(
      Array.from({ length: 40 }, (_, i) => ({ id: i, name: `item-${i}`, tags: ["a", "b"], ok: true })),
    ),
    unicode: "Grüße aus Köln — naïve café, 東京で会いましょう 🚀✨ ".repeat(30),
  };

  it("errs high against the real token count, for prose, code, JSON and mixed unicode", async () => {
    const m = model("gpt-4.1");
    for (const [kind, text] of Object.entries(samples)) {
      const messages = [{ role: "user", content: text }];
      const bytes = Buffer.byteLength(JSON.stringify({ model: "gpt-4.1", messages }));
      const real = (await tokenCounter("o200k_base")).chat(messages);
      const hold = estimateReservation(m, {
        promptBytes: bytes,
        maxTokens: 1,
        defaultMaxTokens: 1,
        markupBps: 0,
      });
      const realCost = computeCost(m, usage({ promptTokens: real, completionTokens: 1 }), {
        markupBps: 0,
      }).total;
      expect(hold, kind).toBeGreaterThanOrEqual(realCost);
    }
  });

  it("holds the output at max_tokens, capped by the model's maximum, or the default", () => {
    const m = model("gpt-4.1-mini");
    const at = (maxTokens: number | undefined) =>
      estimateReservation(m, { promptBytes: 0, maxTokens, defaultMaxTokens: 1000, markupBps: 0 });
    expect(at(100)).toBe(160_000); // 100 × $1.60/1M
    expect(at(undefined)).toBe(1_600_000);
    expect(at(10_000_000)).toBe(at(m.maxOutput));
  });
});
