import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
import OpenAI from "openai";
import { inject } from "vitest";
import { type Config, parseConfig } from "../../src/config.ts";
import type { Clock, Sleeper } from "../../src/core/clock.ts";
import { createApp } from "../../src/gateway/app.ts";
import type { Payments } from "../../src/metering/payments.ts";
import { jsonClientErrors } from "../../src/node-http.ts";
import { createNodeServices, type NodeServices } from "../../src/node-services.ts";
import { type MockUpstream, startMockUpstream } from "../../tools/mock-upstream/mock-upstream.ts";
import { freshDatabaseUrl } from "./databases.ts";

export const ADMIN_TOKEN = "test-admin-token";

/** The two ways the gateway runs: embedded defaults, and production's Postgres + Redis. */
export type Backend = "embedded" | "postgres+redis";
export const backends: Backend[] = ["embedded", "postgres+redis"];

export interface TestGateway {
  url: string;
  services: NodeServices;
  mock: MockUpstream;
  config: Config;
  admin<T = Record<string, unknown>>(
    method: string,
    path: string,
    body?: unknown,
    headers?: Record<string, string>,
  ): Promise<{ status: number; body: T; headers: Headers }>;
  /** A raw POST with an org key (null: none), for the bytes and headers the SDK hides. */
  post(path: string, key: string | null, body: unknown, headers?: Record<string, string>): Promise<Response>;
  /** A new org with a key (and, for integrated orgs, `credits` USD of admin credit). */
  org(opts?: { billingMode?: "integrated" | "byo"; isTrial?: boolean; credits?: string }): Promise<TestOrg>;
  close(): Promise<void>;
}

export interface TestOrg {
  id: string;
  key: string;
  keyId: string;
  client: OpenAI;
}

/** Starts a mock upstream and a gateway in this process on free ports. */
export async function startGateway(
  opts: {
    backend?: Backend;
    env?: Record<string, string>;
    clock?: Clock;
    /** Backoff between upstream attempts (default: real time). */
    sleeper?: Sleeper;
    mock?: MockUpstream;
    payments?: Payments;
    /** Test-only faults, e.g. the journal's replay turned off to show what it prevents. */
    faults?: { noReplay?: boolean };
  } = {},
): Promise<TestGateway> {
  const mock = opts.mock ?? (await startMockUpstream());
  const backend = opts.backend ?? "embedded";
  const env: Record<string, string> = {
    PORT: "0",
    DATA_DIR: "memory://",
    ADMIN_TOKEN,
    OPENAI_BASE_URL: mock.baseUrls.openai,
    OPENROUTER_BASE_URL: mock.baseUrls.openrouter,
    RELACE_BASE_URL: mock.baseUrls.relace,
    OPENAI_API_KEY: "sk-openai-integrated",
    OPENROUTER_API_KEY: "sk-or-integrated",
    RELACE_API_KEY: "rlc-integrated",
    LOG_LEVEL: "silent",
    // A Postgres query slower than 1 s on a busy test machine is slow, not down; the fault tests
    // run the gateway with its default.
    DB_TIMEOUT_MS: "10000",
    ...(backend === "postgres+redis"
      ? { DATABASE_URL: await freshDatabaseUrl(), REDIS_URL: inject("redisUrl") }
      : {}),
    ...opts.env,
  };
  const config = parseConfig(env);
  const services = await createNodeServices(config, {
    clock: opts.clock,
    sleeper: opts.sleeper,
    payments: opts.payments,
    faults: opts.faults,
  });
  const app = createApp(services);
  const server = serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" }) as Server;
  jsonClientErrors(server);
  await new Promise<void>((resolve) => server.once("listening", () => resolve()));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const admin: TestGateway["admin"] = async (method, path, body, headers = {}) => {
    const res = await fetch(`${url}${path}`, {
      method,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json", ...headers },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: res.status, body: (await res.json()) as never, headers: res.headers };
  };

  return {
    url,
    services,
    mock,
    config,
    admin,
    post: (path, key, body, headers = {}) =>
      fetch(`${url}${path}`, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          ...(key ? { authorization: `Bearer ${key}` } : {}),
          ...headers,
        },
        body: typeof body === "string" ? body : JSON.stringify(body),
      }),
    async org({ billingMode = "integrated", isTrial = false, credits } = {}) {
      const org = await admin<{ id: string }>("POST", "/admin/orgs", {
        name: "test org",
        billingMode,
        isTrial,
      });
      if (org.status !== 201) throw new Error(`create org: ${org.status} ${JSON.stringify(org.body)}`);
      const id = org.body.id;
      if (credits) {
        const credit = await admin(
          "POST",
          `/admin/orgs/${id}/credits`,
          { amount: credits, creditType: "admin_grant" },
          {
            "idempotency-key": `initial-${id}`,
          },
        );
        if (credit.status !== 201) throw new Error(`credit: ${credit.status} ${JSON.stringify(credit.body)}`);
      }
      const key = await admin<{ id: string; key: string }>("POST", `/admin/orgs/${id}/api-keys`);
      return {
        id,
        key: key.body.key,
        keyId: key.body.id,
        client: new OpenAI({ apiKey: key.body.key, baseURL: `${url}/v1`, maxRetries: 0 }),
      };
    },
    async close() {
      await new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      });
      await services.calls.drain(10_000); // as on SIGTERM: open calls settle before the services close
      await services.close();
      if (!opts.mock) await mock.close();
    },
  };
}

/** Billing settings that turn auto-recharge on: below $0.50, back to $2, on a saved card. */
export const AUTO_RECHARGE = {
  autoRebuyEnabled: true,
  autoRebuyMinThreshold: "0.5",
  autoRebuyToBalance: "2",
  stripeCustomerId: "cus_1",
  stripePaymentMethodId: "pm_1",
};
