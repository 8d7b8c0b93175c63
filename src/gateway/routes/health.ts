import { Hono } from "hono";
import type { Services } from "../services.ts";

export function healthRoutes(services: Services): Hono {
  const app = new Hono();
  app.get("/healthz", (c) => c.json({ ok: true }));
  app.get("/readyz", async (c) => {
    const checks = await services.ready().catch(() => ({ checks: false }));
    const ok = Object.values(checks).every(Boolean);
    return c.json({ ok, checks }, ok ? 200 : 503);
  });
  return app;
}
