import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { backends, startGateway, type TestGateway } from "../harness/gateway.ts";

interface ErrorBody {
  error: { code: string; type: string; param: string | null; message: string };
  status: number;
}

describe.each(backends)("the org's billing email (%s)", (backend) => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startGateway({ backend });
  });
  afterAll(() => gw?.close());

  const create = (body: Record<string, unknown>) =>
    gw.admin<Record<string, unknown>>("POST", "/admin/orgs", {
      name: "mail",
      billingMode: "integrated",
      isTrial: false,
      ...body,
    });

  it("is set at creation, changed and cleared by PATCH /billing, and returned by GET", async () => {
    const created = await create({ billingEmail: "billing@example.com" });
    expect(created.status).toBe(201);
    expect(created.body.billingEmail).toBe("billing@example.com");
    const id = created.body.id as string;
    expect((await gw.admin("GET", `/admin/orgs/${id}`)).body.billingEmail).toBe("billing@example.com");

    const changed = await gw.admin("PATCH", `/admin/orgs/${id}/billing`, {
      billingEmail: "ops+bills@acme.io",
    });
    expect(changed.status).toBe(200);
    expect(changed.body.billingEmail).toBe("ops+bills@acme.io");
    // A patch of other fields leaves it alone.
    await gw.admin("PATCH", `/admin/orgs/${id}/billing`, { notifyThreshold: "5" });
    expect((await gw.admin("GET", `/admin/orgs/${id}`)).body).toMatchObject({
      billingEmail: "ops+bills@acme.io",
      notifyThreshold: "5",
    });
    await gw.admin("PATCH", `/admin/orgs/${id}/billing`, { billingEmail: null });
    expect((await gw.admin("GET", `/admin/orgs/${id}`)).body.billingEmail).toBeNull();

    const without = await create({});
    expect(without.body.billingEmail).toBeNull();
  });

  it("a bad address is a 400 invalid_request_error naming the field, and changes nothing", async () => {
    const created = await create({ billingEmail: "billing@example.com" });
    const id = created.body.id as string;
    for (const bad of ["not an email", "a@", "@example.com", "", 42, `${"x".repeat(250)}@example.com`]) {
      const patched = await gw.admin<ErrorBody>("PATCH", `/admin/orgs/${id}/billing`, {
        billingEmail: bad,
        notifyThreshold: "1",
      });
      expect(patched.status).toBe(400);
      expect(patched.headers.get("content-type")).toBe("application/json");
      expect(patched.body).toMatchObject({
        error: { code: "invalid_request_error", param: "billingEmail" },
        type: "invalid_request_error",
        status: 400,
      });
    }
    expect((await gw.admin("GET", `/admin/orgs/${id}`)).body).toMatchObject({
      billingEmail: "billing@example.com",
      notifyThreshold: null,
    });
    const refused = await gw.admin<ErrorBody>("POST", "/admin/orgs", {
      name: "bad",
      billingMode: "integrated",
      isTrial: false,
      billingEmail: "nope",
    });
    expect(refused.status).toBe(400);
    expect(refused.body.error.param).toBe("billingEmail");
  });
});
