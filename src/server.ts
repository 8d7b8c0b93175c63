import type { Server } from "node:http";
import { serve } from "@hono/node-server";
import { ConfigError, parseConfig } from "./config.ts";
import { createApp } from "./gateway/app.ts";
import { jsonClientErrors } from "./node-http.ts";
import { createNodeServices } from "./node-services.ts";
import { installProcessGuards } from "./process-guard.ts";

/**
 * The Node entry: parse the environment, wire the services, serve the app. SIGTERM stops
 * accepting, lets open streams finish (bounded by SHUTDOWN_GRACE_MS), settles and flushes, exits 0.
 */
async function main(): Promise<void> {
  let config: ReturnType<typeof parseConfig>;
  try {
    config = parseConfig(process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const services = await createNodeServices(config);
  installProcessGuards(services.log, {
    driverFaults: () => services.metrics.processFaults.inc({ kind: "postgres_driver" }),
    unhandledRejections: () => services.metrics.processFaults.inc({ kind: "unhandled_rejection" }),
  });
  const app = createApp(services);
  const server = serve({ fetch: app.fetch, port: config.PORT, hostname: config.HOST }, (info) => {
    services.log.info("listening", { port: info.port, host: config.HOST });
  });
  jsonClientErrors(server as Server);

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    services.log.info("shutting down", { signal, openCalls: services.calls.size });
    server.close();
    const left = await services.calls.drain(config.SHUTDOWN_GRACE_MS);
    if (left > 0) {
      services.log.warn("grace period over; cutting open streams", { openCalls: left });
      (server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
      await services.calls.drain(5_000);
    }
    await services.close();
    services.log.info("stopped");
    process.exit(0);
  };
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));
}

await main();
