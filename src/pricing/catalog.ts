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

/**
 * The base URL a call came in on: `/v1` takes Planto's ids (`openai/gpt-4.1` is OpenAI direct,
 * other vendors go to OpenRouter); `/openai/v1`, `/openrouter/v1` and `/relace/v1` take that
 * provider's own model names, as a client pointed straight at the provider sends them.
 */
export type Namespace = "planto" | ProviderName;

export interface Catalog {
  /** The model a call names, as its namespace reads it (default `planto`); undefined: not routable. */
  resolve(modelId: string, namespace?: Namespace): CatalogModel | undefined;
  list(namespace?: Namespace): CatalogModel[];
  /** The Relace model `/v1/code/apply` uses when the request names none. */
  defaultApplyModel(): CatalogModel;
}

/**
 * OpenRouter's variant suffixes (`:nitro`, `:floor`, `:free`, `:online`, `:thinking`, `:extended`,
 * and whatever word it adds next) pick a routing or a mode, not another model: they reach OpenRouter
 * as sent and are held at the base model's price.
 */
const VARIANT = /^(.+):([a-z0-9][a-z0-9_-]*)$/i;

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

type Spec = z.output<typeof modelSpecSchema>;

/**
 * Builds the catalogue from the built-in list, OpenRouter's own list when one was loaded
 * (`openrouterModels`, see openrouter-models.ts) and PRICES_FILE's overrides, in that order.
 * A loaded list is authoritative for OpenRouter: its prices replace the built-in ones, and a
 * built-in OpenRouter model it no longer lists is dropped. Without a list the built-in OpenRouter
 * models (and OpenAI's, which OpenRouter resells at OpenAI's price) are the fallback.
 */
export function createCatalog(
  opts: { overrides?: unknown; openrouterModels?: ModelSpec[] } = {},
): Catalog | { error: string } {
  const listed = opts.openrouterModels && new Map(opts.openrouterModels.map((m) => [m.id, m]));
  const specs = new Map<string, Spec>();
  for (const builtin of builtinModels) {
    const spec = modelSpecSchema.parse(builtin);
    if (listed && spec.provider === "openrouter") {
      const live = listed.get(spec.upstreamModel);
      if (!live) continue;
      const { contextWindow, maxOutput, prices } = modelSpecSchema.parse(live);
      specs.set(spec.id, { ...spec, contextWindow, maxOutput, prices });
      continue;
    }
    specs.set(spec.id, spec);
  }
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
        } as Spec);
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

  // Each provider's own names. OpenRouter's: its list (or the fallback), then the catalogue's own
  // OpenRouter models on top, so PRICES_FILE reaches them under either base URL.
  const byProvider: Record<ProviderName, Map<string, CatalogModel>> = {
    openai: new Map(),
    openrouter: new Map(),
    relace: new Map(),
  };
  const openrouter = byProvider.openrouter;
  if (opts.openrouterModels) {
    for (const spec of opts.openrouterModels) openrouter.set(spec.id, toModel(modelSpecSchema.parse(spec)));
  } else {
    for (const m of models) {
      if (m.provider !== "openai") continue;
      const name = `openai/${m.upstreamModel}`;
      openrouter.set(name, { ...m, id: name, aliases: [], provider: "openrouter", upstreamModel: name });
    }
  }
  for (const m of models) {
    byProvider[m.provider].set(m.upstreamModel, m);
    if (m.provider === "relace") for (const alias of m.aliases) byProvider.relace.set(alias, m);
  }

  const resolveOpenRouter = (id: string): CatalogModel | undefined => {
    const variant = VARIANT.exec(id);
    const base = variant ? openrouter.get(variant[1] as string) : undefined;
    if (base) return { ...base, upstreamModel: `${base.upstreamModel}:${variant?.[2]}` };
    return openrouter.get(id);
  };
  // `/v1` sends `openai/*` to OpenAI direct; any other vendor's id is OpenRouter's.
  const viaOpenRouter = (id: string) => id.includes("/") && !id.startsWith("openai/");
  const plantoList = (): CatalogModel[] => {
    const out = [...models];
    const seen = new Set(models.map((m) => m.id));
    for (const m of openrouter.values()) {
      if (seen.has(m.id) || !viaOpenRouter(m.id)) continue;
      seen.add(m.id);
      out.push(m);
    }
    return out;
  };
  let plantoModels: CatalogModel[] | undefined;

  const apply = models.find((m) => m.provider === "relace");
  if (!apply) return { error: "the catalog has no Relace model for /v1/code/apply" };
  return {
    resolve(id, namespace = "planto") {
      if (namespace === "openrouter") return resolveOpenRouter(id);
      if (namespace !== "planto") return byProvider[namespace].get(id);
      return byId.get(id) ?? (viaOpenRouter(id) ? resolveOpenRouter(id) : undefined);
    },
    list(namespace = "planto") {
      if (namespace !== "planto") return [...new Set(byProvider[namespace].values())];
      plantoModels ??= plantoList();
      return plantoModels;
    },
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
export function toOpenAiModel(m: CatalogModel, namespace: Namespace = "planto"): Record<string, unknown> {
  return {
    // Under a provider's base URL a model is named as that provider names it.
    id: namespace === "planto" ? m.id : m.upstreamModel,
    object: "model",
    owned_by: m.ownedBy,
    provider: m.provider,
    context_window: m.contextWindow,
    pricing: { input: m.prices.input, cached_input: m.prices.cachedInput, output: m.prices.output },
  };
}
