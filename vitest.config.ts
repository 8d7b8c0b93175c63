import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/global-setup.ts"],
    // Generous: tests judge behaviour, and a machine whose cores are busy is slow, not wrong.
    testTimeout: 60_000,
    hookTimeout: 90_000,
    pool: "forks",
  },
});
