import { z } from "zod";

/**
 * The gateway's configuration, parsed once at start from `process.env` (Node) or the Worker's
 * bindings. A bad value stops the process with a message that names the variable.
 */
const int = (def: number, min = 0) => z.coerce.number().int().min(min).default(def);
const optionalString = z
  .string()
  .optional()
  .transform((v) => (v === undefined || v.trim() === "" ? undefined : v.trim()));
const url = (def: string) => z.string().url().default(def);

export const configSchema = z
  .object({
    PORT: int(8080, 0),
    HOST: z.string().default("0.0.0.0"),
    DATA_DIR: z.string().default("./.data"),
    DATABASE_URL: optionalString,
    REDIS_URL: optionalString,
    REDIS_CLUSTER_NODES: optionalString,
    /** Namespace of the gateway's Redis keys, so several deployments can share one Redis. */
    REDIS_KEY_PREFIX: z
      .string()
      .regex(/^[A-Za-z0-9_-]+$/, "letters, digits, _ and -")
      .default("pg"),
    ADMIN_TOKEN: optionalString,
    /** Verifies Stripe webhook events (purchases); the webhook is off without it. */
    STRIPE_WEBHOOK_SECRET: optionalString,
    STRIPE_SECRET_KEY: optionalString,

    OPENAI_API_KEY: optionalString,
    OPENROUTER_API_KEY: optionalString,
    RELACE_API_KEY: optionalString,
    OPENAI_BASE_URL: url("https://api.openai.com/v1"),
    OPENROUTER_BASE_URL: url("https://openrouter.ai/api/v1"),
    RELACE_BASE_URL: url("https://instantapply.endpoint.relace.run/v1"),

    MARKUP_BPS: int(0),
    TRIAL_CREDITS: z
      .string()
      .regex(/^\d+(\.\d+)?$/, "a USD decimal like 10 or 12.50")
      .default("10"),
    MONTHLY_GRANT: z
      .string()
      .regex(/^\d+(\.\d+)?$/, "a USD decimal like 20 or 12.50")
      .default("20"),
    TRIAL_MAX_PLANS: int(10, 1),
    TRIAL_MAX_RESPONSES_PER_PLAN: int(20, 1),

    /**
     * How often OpenRouter's model list is reloaded into the catalogue (it is also loaded at start
     * and cached under DATA_DIR); 0 turns the list off (built-in models and PRICES_FILE only).
     */
    OPENROUTER_MODELS_REFRESH_MS: int(3600_000, 0),
    /** JSON file of price overrides and added models (see README). */
    PRICES_FILE: optionalString,
    /** Output tokens a reservation assumes when a request sets no max_tokens. */
    DEFAULT_MAX_TOKENS: int(4_096, 1),
    /** How long a call's hold lives; a crashed gateway's holds are reclaimed after it. */
    HOLD_TTL_MS: int(15 * 60_000, 1),
    /** How often each instance looks for expired holds. */
    RECLAIM_INTERVAL_MS: int(30_000, 1),
    /**
     * The most holds each instance makes ahead per org (src/metering/hold-pool.ts), so that most
     * calls go upstream without a store round trip first; it asks for twice the calls it saw since
     * it last asked, at least 8. 0 turns the pool off (every call reserves alone).
     */
    HOLD_POOL_SIZE: int(64, 0),
    /**
     * How often each flusher lane reads the ledger stream when the last read was not a full batch:
     * waiting lets events gather, and a few large batches cost Redis and Postgres far less than many
     * small ones. It bounds the ledger's lag (about this plus one commit).
     */
    FLUSH_INTERVAL_MS: int(100, 1),
    /** How long a ledger entry may sit unacked with a dead flusher before another takes it. */
    FLUSH_CLAIM_IDLE_MS: int(30_000, 1),
    /** How often each instance checks for billing months that started and grants MONTHLY_GRANT. */
    GRANT_INTERVAL_MS: int(60_000, 1),
    /** How long after account deletion the org's data is purged (at most 14 days). */
    PURGE_DELAY_MS: int(7 * 24 * 3600_000, 0).refine((v) => v <= 14 * 24 * 3600_000, "at most 14 days"),
    /** How often each instance looks for deleted orgs to purge. */
    PURGE_INTERVAL_MS: int(3600_000, 1),
    /** Name of this instance's ledger consumer (default: host and pid). */
    FLUSHER_CONSUMER: optionalString,
    /** Largest request body accepted, in bytes. */
    MAX_BODY_BYTES: int(10 * 1024 * 1024, 1),
    /** How long to wait for the upstream's response headers. */
    UPSTREAM_HEADERS_TIMEOUT_MS: int(60_000, 1),
    /** How long an upstream body may stay silent before the call is failed. */
    UPSTREAM_IDLE_TIMEOUT_MS: int(300_000, 1),
    /**
     * Tries per route of a call (the model's own, then each fallback) when the provider refuses the
     * connection or answers 429 or 5xx before the first byte; 1 turns retries off.
     */
    UPSTREAM_ATTEMPTS: int(2, 1),
    /** The first retry's backoff; each later one doubles it, with full jitter. */
    UPSTREAM_RETRY_BASE_MS: int(250, 0),
    /**
     * The longest a call waits before a retry, `retry-after` included: a provider asking for more
     * is not waited for (the next route is tried, or its error is the answer).
     */
    UPSTREAM_RETRY_MAX_MS: int(4_000, 0),
    /**
     * How long a requested auto-recharge holds the org's recharge lease: no other recharge starts
     * meanwhile, and a gateway that died during the payment call leaves auto-recharge off no longer.
     */
    REBUY_LEASE_MS: int(5 * 60_000, 1),
    /** How often each instance retries the credits owed for payments that succeeded (credit_outbox). */
    CREDIT_RETRY_INTERVAL_MS: int(5_000, 1),
    /** How long a cached api-key lookup is trusted; bounds how late a revocation takes effect. */
    KEY_CACHE_TTL_MS: int(2_000, 0),
    /**
     * How long past its TTL a cached api key is still served while Postgres cannot be reached
     * (stale-if-error): calls with known keys go on through an outage this long, and a revocation
     * made just before it may apply this much later. A key not in the cache gets 503 meanwhile.
     */
    KEY_CACHE_STALE_MS: int(15 * 60_000, 0),
    /**
     * Deadline of Postgres work on the request path (uncached key lookups, /billing, /admin,
     * /readyz): past it the caller gets 503 `unavailable`. A refused or dropped connection opens a
     * breaker at once, and while it is open these answer 503 without waiting.
     */
    DB_TIMEOUT_MS: int(1_000, 1),
    /** Bearer token that `GET /metrics` requires; without it /metrics is off (404). */
    METRICS_TOKEN: optionalString,
    /** On SIGTERM, how long open streams may run on before they are cut. */
    SHUTDOWN_GRACE_MS: int(30_000, 0),
    LOG_LEVEL: z.enum(["debug", "info", "warn", "error", "silent"]).default("info"),

    /** Resend API key for billing notifications; without it they are logged, not emailed. */
    EMAIL_API_KEY: optionalString,
    /** Sender of notification emails, e.g. `Planto <billing@planto.dev>` (a domain verified with the provider). */
    EMAIL_FROM: optionalString,
    /** The provider's send endpoint (Resend's `POST /emails`; tests point it at a mock). */
    EMAIL_API_URL: url("https://api.resend.com/emails"),
    /** How often each instance looks for notifications to deliver. */
    NOTIFY_INTERVAL_MS: int(5_000, 1),
    /** Delivery attempts (30 s, 1 min, 2 min, … apart, at most an hour) before a notification is given up. */
    NOTIFY_MAX_ATTEMPTS: int(10, 1),
  })
  .superRefine((c, ctx) => {
    if (c.EMAIL_API_KEY && !c.EMAIL_FROM) {
      ctx.addIssue({
        code: "custom",
        path: ["EMAIL_FROM"],
        message: "required with EMAIL_API_KEY (the sender address)",
      });
    }
  });

export type Config = z.infer<typeof configSchema>;

export class ConfigError extends Error {
  override name = "ConfigError";
}

/** Parses an environment; throws a ConfigError naming every bad variable. */
export function parseConfig(env: Record<string, string | undefined>): Config {
  const result = configSchema.safeParse(env);
  if (result.success) return result.data;
  const lines = result.error.issues.map((issue) => {
    const name = issue.path.join(".");
    return `${name}=${JSON.stringify(env[name] ?? "")}: ${issue.message}`;
  });
  throw new ConfigError(`invalid configuration:\n  ${lines.join("\n  ")}`);
}
