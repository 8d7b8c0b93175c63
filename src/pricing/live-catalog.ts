import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import type { Logger } from "../core/log.ts";
import { type Catalog, createCatalog, type ModelSpec } from "./catalog.ts";
import { parseOpenRouterModels } from "./openrouter-models.ts";

/** Where the last good copy of OpenRouter's list is kept between starts. */
export interface ModelListCache {
  read(): Promise<unknown>;
  write(list: unknown): Promise<void>;
}

/** Runs `fn` after `ms`; returns how to cancel. Each entry wires its own timers. */
export type Schedule = (fn: () => void, ms: number) => () => void;

export interface LiveCatalog extends Catalog {
  /** Loads OpenRouter's list now; says whether the catalogue took a new one. Never throws. */
  refresh(): Promise<boolean>;
  /** Refreshes every `everyMs` (a failed load is tried again sooner) until `stop()`. */
  start(schedule: Schedule): void;
  stop(): void;
}

/** How soon a failed load is tried again, at most. */
const RETRY_MS = 60_000;

/**
 * The catalogue with OpenRouter's model list in it, reloaded in the background. It starts on the
 * cached list (or the built-in one), so a gateway that cannot reach OpenRouter still starts; each
 * good load swaps in a new catalogue whole and is cached, a bad one keeps the last good copy.
 */
export async function createLiveCatalog(opts: {
  overrides: unknown;
  /** Fetches OpenRouter's `/models` body (parsed JSON). */
  fetchList: () => Promise<unknown>;
  cache: ModelListCache | undefined;
  everyMs: number;
  log: Logger;
}): Promise<LiveCatalog> {
  const { log } = opts;
  const build = (openrouterModels: ModelSpec[] | undefined): Catalog => {
    const built = createCatalog({ overrides: opts.overrides, openrouterModels });
    if ("error" in built) throw new Error(built.error);
    return built;
  };
  let current = build(undefined);
  const cached = await opts.cache?.read().catch(() => undefined);
  if (cached !== undefined) {
    const parsed = parseOpenRouterModels(cached);
    if ("models" in parsed) current = build(parsed.models);
  }
  let cancel: (() => void) | undefined;

  const refresh = async (): Promise<boolean> => {
    try {
      const json = await opts.fetchList();
      const parsed = parseOpenRouterModels(json);
      if ("error" in parsed) throw new Error(parsed.error);
      current = build(parsed.models);
      log.info("OpenRouter model list loaded", { models: parsed.models.length, skipped: parsed.skipped });
      await opts.cache?.write(json).catch((err: unknown) => {
        log.warn("could not cache OpenRouter's model list", { err: String(err) });
      });
      return true;
    } catch (err) {
      log.warn("OpenRouter model list not loaded; keeping the last good catalogue", {
        err: err instanceof Error ? err.message : String(err),
        source: cached === undefined ? "built-in" : "cache",
      });
      return false;
    }
  };

  return {
    resolve: (id, namespace) => current.resolve(id, namespace),
    list: (namespace) => current.list(namespace),
    defaultApplyModel: () => current.defaultApplyModel(),
    refresh,
    start(schedule) {
      const next = (ms: number) => {
        cancel = schedule(() => {
          void refresh().then((ok) => {
            if (cancel) next(ok ? opts.everyMs : Math.min(RETRY_MS, opts.everyMs));
          });
        }, ms);
      };
      next(opts.everyMs);
    },
    stop() {
      const c = cancel;
      cancel = undefined;
      c?.();
    },
  };
}

/** GET {OPENROUTER_BASE_URL}/models with a bound on how long it may take. */
export function openRouterListFetcher(baseUrl: string, timeoutMs: number): () => Promise<unknown> {
  return async () => {
    const res = await fetch(`${baseUrl.replace(/\/+$/, "")}/models`, {
      headers: { accept: "application/json" },
      signal: AbortSignal.timeout(timeoutMs),
    });
    if (!res.ok) throw new Error(`GET /models answered ${res.status}`);
    return (await res.json()) as unknown;
  };
}

/** The cache as a JSON file, replaced whole (written aside, then renamed) so a crash never halves it. */
export function fileModelListCache(path: string): ModelListCache {
  return {
    async read() {
      try {
        return JSON.parse(await readFile(path, "utf8")) as unknown;
      } catch {
        return undefined;
      }
    },
    async write(list) {
      await mkdir(dirname(path), { recursive: true });
      const aside = `${path}.${process.pid}.tmp`;
      await writeFile(aside, JSON.stringify(list));
      await rename(aside, path);
    },
  };
}
