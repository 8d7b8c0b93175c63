import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { backends, startGateway, type TestGateway, type TestOrg } from "../harness/gateway.ts";

describe.each(backends)("BYO trial limits count model responses, not admitted calls (%s)", (backend) => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startGateway({ backend, env: { TRIAL_MAX_PLANS: "3", TRIAL_MAX_RESPONSES_PER_PLAN: "20" } });
  });
  afterAll(() => gw?.close());

  const call = (org: TestOrg, plan: string, mock: Record<string, unknown> = {}) =>
    gw.post(
      "/v1/chat/completions",
      org.key,
      { model: "gpt-4.1-nano", messages: [{ role: "user", content: "hi" }], mock },
      { "x-planto-provider-key": "sk-user-own", "x-planto-plan-id": plan },
    );
  const code = async (res: Response) => ((await res.json()) as { error?: { code: string } }).error?.code;
  const trialOrg = () => gw.org({ billingMode: "byo", isTrial: true });

  it("30 concurrent calls on one plan with a limit of 20: exactly 20 are answered, 10 refused", async () => {
    const org = await trialOrg();
    // The mock holds every answer back, so all 30 are in flight at once.
    const results = await Promise.all(
      Array.from({ length: 30 }, () => call(org, "p", { firstByteDelayMs: 300 })),
    );
    const statuses = results.map((r) => r.status);
    expect(statuses.filter((s) => s === 200)).toHaveLength(20);
    expect(statuses.filter((s) => s === 403)).toHaveLength(10);
    for (const r of results.filter((r) => r.status === 403))
      expect(await code(r)).toBe("trial_messages_exceeded");
    // The 20 answers are counted for good.
    expect(await code(await call(org, "p"))).toBe("trial_messages_exceeded");
  });

  it("calls the upstream failed, refused or never answered do not use up the plan's responses", async () => {
    const org = await trialOrg();
    const failures = await Promise.all([
      call(org, "p", { status: 500 }),
      call(org, "p", { status: 429 }),
      call(org, "p", { status: 400 }),
      call(org, "p", { abortAfterChunks: 0 }),
    ]);
    expect(failures.map((r) => r.status)).toEqual([502, 429, 400, 502]);
    for (let i = 0; i < 20; i++) expect((await call(org, "p")).status).toBe(200);
    expect(await code(await call(org, "p"))).toBe("trial_messages_exceeded");
  });

  it("a plan whose only calls failed does not count against TRIAL_MAX_PLANS", async () => {
    const org = await trialOrg();
    expect((await call(org, "failed", { status: 500 })).status).toBe(502);
    expect((await call(org, "failed", { status: 503 })).status).toBe(502);
    for (const plan of ["a", "b", "c"]) expect((await call(org, plan)).status).toBe(200);
    expect(await code(await call(org, "d"))).toBe("trial_plans_exceeded");
    expect(await code(await call(org, "failed"))).toBe("trial_plans_exceeded");
    expect((await call(org, "a")).status).toBe(200);
  });
});
