import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/global-setup.ts"],
    // Generous: tests judge behaviour, and a machine whose cores are busy is slow, not wrong.
    testTimeout: 60_000,
    hookTimeout: 90_000,
    pool: "forks",
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
  },
});
