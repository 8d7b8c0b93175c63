import { cloudflareTest } from "@cloudflare/vitest-pool-workers";
import { defineConfig } from "vitest/config";

/**
 * Two projects, one `npm test`: the Node suite (real Redis and Postgres started by its global
 * setup), and the Workers suite, which runs inside workerd itself (@cloudflare/vitest-pool-workers)
 * against the Worker of wrangler.toml, with a real Postgres and the mock upstream started in Node.
 */
// wrangler (the pool's, and `wrangler dev` in test/worker-dev.test.ts) sends no telemetry from tests.
process.env.WRANGLER_SEND_METRICS ??= "false";

export default defineConfig({
  test: {
    // Generous: tests judge behaviour, and a machine whose cores are busy is slow, not wrong.
    testTimeout: 60_000,
    hookTimeout: 90_000,
    // postgres.js 3.4.9 throws this from a timer when Postgres drops a connection mid-write (see
    // src/process-guard.ts, which contains it in the Node entry). Fault tests that run the gateway
    // inside the test process meet it too; it is the known driver fault, not a test's failure.
    // Every other uncaught error still fails the run.
    onUnhandledError(error) {
      const err = error as { name?: string; message?: string; stack?: string };
      const driverFault =
        err.name === "TypeError" &&
        /reading 'write'/.test(err.message ?? "") &&
        /[/\\]postgres[/\\].*connection\.js/.test(err.stack ?? "");
      return driverFault ? false : undefined;
    },
    projects: [
      {
        extends: true,
        test: {
          name: "node",
          include: ["test/**/*.test.ts"],
          exclude: ["test/workerd/**"],
          globalSetup: ["test/global-setup.ts"],
          pool: "forks",
        },
      },
      {
        extends: true,
        plugins: [
          cloudflareTest(({ inject }) => ({
            wrangler: { configPath: "./wrangler.toml" },
            miniflare: {
              bindings: {
                DATABASE_URL: inject("workerdDatabaseUrl"),
                OPENAI_BASE_URL: inject("workerdOpenAiUrl"),
                OPENAI_API_KEY: "sk-openai-integrated",
                ADMIN_TOKEN: "worker-admin",
                LOG_LEVEL: "silent",
              },
            },
          })),
        ],
        test: {
          name: "workerd",
          include: ["test/workerd/**/*.test.ts"],
          globalSetup: ["test/workerd/global-setup.ts"],
        },
      },
    ],
  },
});
