import { describe, expect, it } from "vitest";
import { type Catalog, createCatalog } from "../../src/pricing/catalog.ts";

const catalog = createCatalog() as Catalog;

describe("catalog", () => {
  it("routes Planto ids and bare OpenAI ids", () => {
    expect(catalog.resolve("openai/gpt-4.1")).toMatchObject({ provider: "openai", upstreamModel: "gpt-4.1" });
    expect(catalog.resolve("gpt-4.1-mini")).toMatchObject({ id: "openai/gpt-4.1-mini", provider: "openai" });
    expect(catalog.resolve("anthropic/claude-sonnet-4")).toMatchObject({
      provider: "openrouter",
      upstreamModel: "anthropic/claude-sonnet-4",
    });
    expect(catalog.resolve("google/gemini-2.5-flash")?.provider).toBe("openrouter");
    expect(catalog.resolve("deepseek/deepseek-r1")?.provider).toBe("openrouter");
    expect(catalog.resolve("relace-apply-3")?.provider).toBe("relace");
    expect(catalog.resolve("acme/unknown")).toBeUndefined();
  });

  it("ships every model Planto uses, with exact prices", () => {
    for (const id of [
      "openai/gpt-4.1",
      "openai/gpt-4.1-mini",
      "openai/gpt-4.1-nano",
      "openai/o3",
      "openai/o4-mini",
      "anthropic/claude-sonnet-4",
      "anthropic/claude-opus-4",
      "anthropic/claude-3.7-sonnet",
      "anthropic/claude-3.5-haiku",
      "google/gemini-2.5-pro",
      "google/gemini-2.5-flash",
      "deepseek/deepseek-chat-v3-0324",
      "deepseek/deepseek-r1",
      "relace-apply-3",
    ]) {
      expect(catalog.resolve(id), id).toBeDefined();
    }
    expect(catalog.resolve("gpt-4.1-nano")?.micro).toEqual({
      input: 100_000,
      cachedInput: 25_000,
      cacheWrite: 100_000,
      output: 400_000,
    });
    expect(catalog.resolve("anthropic/claude-sonnet-4")?.micro.cacheWrite).toBe(3_750_000);
  });

  it("takes overrides and additions from PRICES_FILE, and names a bad entry", () => {
    const custom = createCatalog({
      overrides: [
        { id: "gpt-4.1", prices: { input: "1.5" } },
        {
          id: "mistral/mistral-large",
          provider: "openrouter",
          upstreamModel: "mistralai/mistral-large",
          ownedBy: "mistral",
          contextWindow: 128000,
          maxOutput: 8192,
          prices: { input: "2", cachedInput: "2", output: "6" },
        },
      ],
    }) as Catalog;
    expect(custom.resolve("openai/gpt-4.1")?.prices).toMatchObject({ input: "1.5", output: "8" });
    expect(custom.resolve("mistral/mistral-large")?.upstreamModel).toBe("mistralai/mistral-large");
    expect(createCatalog({ overrides: [{ id: "new/model", prices: { input: "1" } }] })).toHaveProperty(
      "error",
    );
    expect(createCatalog({ overrides: [{ id: "gpt-4.1", prices: { input: "-1" } }] })).toHaveProperty(
      "error",
    );
    expect(createCatalog({ overrides: { not: "an array" } })).toHaveProperty("error");
  });
});
