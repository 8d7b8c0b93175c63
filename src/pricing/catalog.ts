import { readFile } from "node:fs/promises";
import { z } from "zod";
import type { ProviderName } from "../core/usage.ts";
import { type Encoding, type ModelSpec, modelSpecSchema, pricesSchema } from "./model-spec.ts";
import { builtinModels } from "./models.ts";

export type { Encoding, ModelSpec };

/** Prices per 1M tokens in MICRODOLLARS, so tokens × price is an exact integer of picodollars. */
export interface MicroPrices {
  input: number;
  cachedInput: number;
  cacheWrite: number;
  output: number;
}

export interface CatalogModel {
  id: string;
  aliases: string[];
  provider: ProviderName;
  upstreamModel: string;
  ownedBy: string;
  contextWindow: number;
  maxOutput: number;
  encoding: Encoding;
  prices: { input: string; cachedInput: string; cacheWrite?: string; output: string };
  micro: MicroPrices;
  /**
   * The model's other routes, in order: the same model reached through another provider, each
   * priced on its own (a call is charged at the price of the route that served it).
   */
  fallbacks: CatalogModel[];
}

export interface Catalog {
  resolve(modelId: string): CatalogModel | undefined;
  list(): CatalogModel[];
  /** The Relace model `/v1/code/apply` uses when the request names none. */
  defaultApplyModel(): CatalogModel;
}

function micro(decimalUsd: string): number {
  const [whole = "0", frac = ""] = decimalUsd.split(".");
  return Number(whole) * 1_000_000 + Number(frac.padEnd(6, "0"));
}

function microPrices(prices: CatalogModel["prices"]): MicroPrices {
  return {
    input: micro(prices.input),
    cachedInput: micro(prices.cachedInput),
    // Without a listed cache-write price, writes bill as plain input.
    cacheWrite: micro(prices.cacheWrite ?? prices.input),
    output: micro(prices.output),
  };
}

function toModel(spec: z.output<typeof modelSpecSchema>): CatalogModel {
  const { fallbacks = [], ...rest } = spec;
  const model: CatalogModel = { ...rest, micro: microPrices(spec.prices), fallbacks: [] };
  model.fallbacks = fallbacks.map((route) => {
    const prices = route.prices ?? spec.prices;
    return {
      ...model,
      provider: route.provider,
      upstreamModel: route.upstreamModel,
      prices,
      micro: microPrices(prices),
      fallbacks: [],
    };
  });
  return model;
}

/**
 * Overrides from PRICES_FILE: an array of entries. An entry whose id (or alias) names a known model
 * replaces its prices and any other fields it gives; an entry with a new id adds a model and must
 * give every field.
 */
const overrideSchema = z.array(
  z.union([
    modelSpecSchema,
    z
      // An override may give fallbacks (or other fields) alone, without prices.
      .object({ id: z.string().min(1), prices: pricesSchema.partial().optional() })
      .extend(modelSpecSchema.omit({ id: true, prices: true }).partial().shape)
      // Without their defaults: an entry that does not name them keeps the model's own.
      .extend({
        aliases: z.array(z.string().min(1)).optional(),
        encoding: z.enum(["o200k_base", "cl100k_base"]).optional(),
      }),
  ]),
);

export function createCatalog(opts: { overrides?: unknown } = {}): Catalog | { error: string } {
  const specs = new Map<string, z.output<typeof modelSpecSchema>>();
  for (const spec of builtinModels) specs.set(spec.id, modelSpecSchema.parse(spec));
  if (opts.overrides !== undefined) {
    const parsed = overrideSchema.safeParse(opts.overrides);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      return { error: `PRICES_FILE entry ${issue?.path.join(".")}: ${issue?.message}` };
    }
    for (const entry of parsed.data) {
      const known = [...specs.values()].find((s) => s.id === entry.id || s.aliases.includes(entry.id));
      if (known) {
        specs.set(known.id, {
          ...known,
          ...Object.fromEntries(Object.entries(entry).filter(([, v]) => v !== undefined)),
          id: known.id,
          prices: { ...known.prices, ...entry.prices },
        } as z.output<typeof modelSpecSchema>);
        continue;
      }
      const full = modelSpecSchema.safeParse(entry);
      if (!full.success) {
        const issue = full.error.issues[0];
        return {
          error: `PRICES_FILE entry '${entry.id}' is a new model: ${issue?.path.join(".")}: ${issue?.message}`,
        };
      }
      specs.set(full.data.id, full.data);
    }
  }
  const models = [...specs.values()].map(toModel);
  const byId = new Map<string, CatalogModel>();
  for (const m of models) {
    byId.set(m.id, m);
    for (const alias of m.aliases) if (!byId.has(alias)) byId.set(alias, m);
  }
  const apply = models.find((m) => m.provider === "relace");
  if (!apply) return { error: "the catalog has no Relace model for /v1/code/apply" };
  return {
    resolve: (id) => byId.get(id),
    list: () => models,
    defaultApplyModel: () => apply,
  };
}

/** Reads and parses PRICES_FILE; errors are values naming the file. */
export async function loadPricesFile(path: string): Promise<{ overrides: unknown } | { error: string }> {
  try {
    return { overrides: JSON.parse(await readFile(path, "utf8")) as unknown };
  } catch (err) {
    return { error: `PRICES_FILE ${path}: ${err instanceof Error ? err.message : String(err)}` };
  }
}

/** The contract's `/v1/models` entry: provider prices in USD per 1M tokens, before markup. */
export function toOpenAiModel(m: CatalogModel): Record<string, unknown> {
  return {
    id: m.id,
    object: "model",
    owned_by: m.ownedBy,
    provider: m.provider,
    context_window: m.contextWindow,
    pricing: { input: m.prices.input, cached_input: m.prices.cachedInput, output: m.prices.output },
  };
}
