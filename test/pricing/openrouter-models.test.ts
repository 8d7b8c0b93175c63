import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../../src/core/log.ts";
import { type Catalog, createCatalog, type ModelSpec } from "../../src/pricing/catalog.ts";
import {
  createLiveCatalog,
  fileModelListCache,
  openRouterListFetcher,
  type Schedule,
} from "../../src/pricing/live-catalog.ts";
import { parseOpenRouterModels, perMillion } from "../../src/pricing/openrouter-models.ts";
import { type MockUpstream, startMockUpstream } from "../../tools/mock-upstream/mock-upstream.ts";

const listed = (json: unknown): ModelSpec[] => {
  const parsed = parseOpenRouterModels(json);
  if ("error" in parsed) throw new Error(parsed.error);
  return parsed.models;
};

/** A logger whose lines the test reads. */
function capturingLog() {
  const lines: Record<string, unknown>[] = [];
  const log = createLogger("info", (line) => lines.push(JSON.parse(line) as Record<string, unknown>));
  return { log, lines };
}

describe("OpenRouter's model list in the catalogue", () => {
  let mock: MockUpstream;
  let list: unknown;
  beforeAll(async () => {
    mock = await startMockUpstream();
    list = await openRouterListFetcher(mock.baseUrls.openrouter, 5_000)();
  });
  afterAll(() => mock?.close());

  it("converts USD per token to USD per 1M tokens exactly, rounding finer prices up", () => {
    expect(perMillion("0.000003")).toBe("3");
    expect(perMillion("0.0000000375")).toBe("0.0375");
    expect(perMillion("0.00000000000001")).toBe("0.000001");
    expect(perMillion("0")).toBe("0");
    expect(perMillion(3e-7)).toBe("0.3");
    expect(perMillion("-1")).toBeUndefined();
    expect(perMillion("")).toBeUndefined();
    expect(perMillion(undefined)).toBeUndefined();
  });

  it("reads id, context, max output and the four prices; skips what it cannot price", () => {
    const parsed = parseOpenRouterModels(list);
    if ("error" in parsed) throw new Error(parsed.error);
    expect(parsed.skipped).toBe(1); // openrouter/auto, priced -1
    expect(parsed.models.find((m) => m.id === "anthropic/claude-sonnet-4")).toMatchObject({
      provider: "openrouter",
      upstreamModel: "anthropic/claude-sonnet-4",
      ownedBy: "anthropic",
      contextWindow: 200_000,
      maxOutput: 64_000,
      prices: { input: "3", output: "15", cachedInput: "0.3", cacheWrite: "3.75" },
    });
    // No listed max_completion_tokens: the context window bounds the output.
    expect(parsed.models.find((m) => m.id === "mistral/devstral-small")?.maxOutput).toBe(128_000);
    expect(parseOpenRouterModels({ nope: 1 })).toHaveProperty("error");
    expect(parseOpenRouterModels({ data: [{ id: "x/y", pricing: { prompt: "-1" } }] })).toHaveProperty(
      "error",
    );
  });

  it("resolves each base URL's own names; variants go up as sent at the base model's price", () => {
    const catalog = createCatalog({ openrouterModels: listed(list) }) as Catalog;
    const nitro = catalog.resolve("anthropic/claude-sonnet-4:nitro", "openrouter");
    const base = catalog.resolve("anthropic/claude-sonnet-4", "openrouter");
    expect(nitro).toMatchObject({
      id: "anthropic/claude-sonnet-4",
      upstreamModel: "anthropic/claude-sonnet-4:nitro",
    });
    expect(nitro?.micro).toEqual(base?.micro);
    for (const suffix of ["floor", "free", "online", "thinking", "extended", "someday"]) {
      expect(catalog.resolve(`qwen/qwen3-32b:${suffix}`, "openrouter")?.upstreamModel).toBe(
        `qwen/qwen3-32b:${suffix}`,
      );
    }
    // A listed :free variant is still held at its base model's price.
    expect(catalog.resolve("deepseek/deepseek-r1:free", "openrouter")?.micro.input).toBe(550_000);
    // openai/* is OpenAI direct on /v1 and OpenRouter's on /openrouter/v1.
    expect(catalog.resolve("openai/gpt-4.1")?.provider).toBe("openai");
    expect(catalog.resolve("openai/gpt-4.1", "openrouter")?.provider).toBe("openrouter");
    expect(catalog.resolve("gpt-4.1", "openai")).toMatchObject({
      provider: "openai",
      upstreamModel: "gpt-4.1",
    });
    expect(catalog.resolve("openai/gpt-4.1", "openai")).toBeUndefined();
    expect(catalog.resolve("gpt-4.1", "openrouter")).toBeUndefined();
    expect(catalog.resolve("relace-apply-3", "relace")?.provider).toBe("relace");
    expect(catalog.resolve("relace-apply-3", "openai")).toBeUndefined();
    // /v1 reaches every vendor OpenRouter lists.
    expect(catalog.resolve("qwen/qwen3-8b:nitro")).toMatchObject({ provider: "openrouter" });
    // A model OpenRouter does not list is not routable, built-in or not.
    expect(catalog.resolve("acme/unknown:nitro", "openrouter")).toBeUndefined();
    expect(catalog.list("openrouter").some((m) => m.id === "openrouter/auto")).toBe(false);
    expect(
      catalog
        .list("openai")
        .map((m) => m.upstreamModel)
        .sort(),
    ).toEqual(["gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o3", "o4-mini"]);
  });

  it("lets PRICES_FILE override a listed model under either base URL", () => {
    const catalog = createCatalog({
      openrouterModels: listed(list),
      overrides: [{ id: "anthropic/claude-sonnet-4", prices: { input: "2.5" } }],
    }) as Catalog;
    expect(catalog.resolve("anthropic/claude-sonnet-4")?.prices.input).toBe("2.5");
    expect(catalog.resolve("anthropic/claude-sonnet-4:nitro", "openrouter")?.prices.input).toBe("2.5");
  });

  it("without a list, falls back to the built-in OpenRouter models (and OpenAI's under OpenRouter's names)", () => {
    const catalog = createCatalog() as Catalog;
    expect(catalog.resolve("anthropic/claude-sonnet-4:nitro", "openrouter")?.micro.input).toBe(3_000_000);
    expect(catalog.resolve("openai/o3", "openrouter")).toMatchObject({
      provider: "openrouter",
      upstreamModel: "openai/o3",
    });
    expect(catalog.resolve("qwen/qwen3-32b", "openrouter")).toBeUndefined();
  });

  describe("loading", () => {
    let dir: string;
    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), "planto-models-"));
    });
    afterAll(() => rm(dir, { recursive: true, force: true }));

    it("caches a good load, starts on the cache when OpenRouter is unreachable, and says so", async () => {
      const path = join(dir, "openrouter-models.json");
      const first = capturingLog();
      const live = await createLiveCatalog({
        overrides: undefined,
        fetchList: openRouterListFetcher(mock.baseUrls.openrouter, 5_000),
        cache: fileModelListCache(path),
        everyMs: 3_600_000,
        log: first.log,
      });
      expect(live.resolve("qwen/qwen3-32b:nitro", "openrouter")).toBeUndefined(); // built-in until loaded
      expect(await live.refresh()).toBe(true);
      expect(live.resolve("qwen/qwen3-32b:nitro", "openrouter")?.provider).toBe("openrouter");
      expect(JSON.parse(await readFile(path, "utf8"))).toEqual(list);

      const second = capturingLog();
      const offline = await createLiveCatalog({
        overrides: undefined,
        fetchList: openRouterListFetcher("http://127.0.0.1:9/api/v1", 2_000),
        cache: fileModelListCache(path),
        everyMs: 3_600_000,
        log: second.log,
      });
      expect(await offline.refresh()).toBe(false);
      expect(offline.resolve("qwen/qwen3-32b:nitro", "openrouter")?.provider).toBe("openrouter");
      expect(second.lines.find((l) => l.level === "warn")).toMatchObject({ source: "cache" });

      // A corrupt cache and no OpenRouter: the built-in list.
      await writeFile(path, "{not json");
      const third = capturingLog();
      const bare = await createLiveCatalog({
        overrides: undefined,
        fetchList: openRouterListFetcher("http://127.0.0.1:9/api/v1", 2_000),
        cache: fileModelListCache(path),
        everyMs: 3_600_000,
        log: third.log,
      });
      expect(await bare.refresh()).toBe(false);
      expect(bare.resolve("anthropic/claude-sonnet-4:nitro", "openrouter")).toBeDefined();
      expect(bare.resolve("qwen/qwen3-32b", "openrouter")).toBeUndefined();
      expect(third.lines.find((l) => l.level === "warn")).toMatchObject({ source: "built-in" });
    });

    it("refreshes on the schedule it is given, sooner after a failure, until stopped", async () => {
      const pending: Array<{ fn: () => void; ms: number; cancelled: boolean }> = [];
      const schedule: Schedule = (fn, ms) => {
        const entry = { fn, ms, cancelled: false };
        pending.push(entry);
        return () => {
          entry.cancelled = true;
        };
      };
      let answers = [list, new Error("down"), list];
      let loads = 0;
      const live = await createLiveCatalog({
        overrides: undefined,
        fetchList: async () => {
          loads += 1;
          const next = answers[0];
          answers = answers.slice(1);
          if (next instanceof Error) throw next;
          return next;
        },
        cache: undefined,
        everyMs: 3_600_000,
        log: capturingLog().log,
      });
      live.start(schedule);
      const fire = async () => {
        const entry = pending.at(-1);
        if (!entry) throw new Error("nothing scheduled");
        entry.fn();
        await expect.poll(() => pending.length > 0 && pending.at(-1) !== entry).toBe(true);
      };
      expect(pending.map((p) => p.ms)).toEqual([3_600_000]);
      await fire();
      expect(pending.at(-1)?.ms).toBe(3_600_000);
      await fire(); // fails: tried again within a minute
      expect(pending.at(-1)?.ms).toBe(60_000);
      await fire();
      expect(pending.at(-1)?.ms).toBe(3_600_000);
      expect(loads).toBe(3);
      live.stop();
      expect(pending.at(-1)?.cancelled).toBe(true);
    });
  });
});

describe("the Node entry's catalogue", () => {
  it("starts on the built-in list when OpenRouter cannot be reached, logs it, and caches under DATA_DIR once it can", async () => {
    const { loadCatalog } = await import("../../src/node-services.ts");
    const { parseConfig } = await import("../../src/config.ts");
    const dir = await mkdtemp(join(tmpdir(), "planto-data-"));
    const mock = await startMockUpstream();
    try {
      const offline = capturingLog();
      const cold = await loadCatalog(
        parseConfig({ DATA_DIR: dir, OPENROUTER_BASE_URL: "http://127.0.0.1:9/api/v1" }),
        offline.log,
      );
      cold.stop();
      expect(cold.resolve("anthropic/claude-sonnet-4:nitro", "openrouter")).toBeDefined();
      expect(cold.resolve("qwen/qwen3-32b:nitro", "openrouter")).toBeUndefined();
      expect(offline.lines.find((l) => l.level === "warn")).toMatchObject({ source: "built-in" });

      const online = await loadCatalog(
        parseConfig({ DATA_DIR: dir, OPENROUTER_BASE_URL: mock.baseUrls.openrouter }),
        capturingLog().log,
      );
      online.stop();
      expect(online.resolve("qwen/qwen3-32b:nitro", "openrouter")).toBeDefined();
      expect(JSON.parse(await readFile(join(dir, "openrouter-models.json"), "utf8"))).toHaveProperty("data");

      // OPENROUTER_MODELS_REFRESH_MS=0: the built-in list only, the cached copy unread.
      const off = await loadCatalog(
        parseConfig({ DATA_DIR: dir, OPENROUTER_MODELS_REFRESH_MS: "0" }),
        capturingLog().log,
      );
      expect(off.resolve("qwen/qwen3-32b", "openrouter")).toBeUndefined();
    } finally {
      await mock.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
