import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Database, openDatabase } from "../../src/db/client.ts";
import {
  createApiKey,
  createOrg,
  findApiKeyByHash,
  getOrg,
  hashApiKey,
  markOrgDeleted,
  revokeApiKey,
  updateOrgBilling,
} from "../../src/db/orgs.ts";
import { freshDatabaseUrl } from "../harness/databases.ts";

describe.each(["pglite", "postgres"] as const)("orgs and api keys (%s)", (kind) => {
  let database: Database;

  beforeAll(async () => {
    database = await openDatabase(
      kind === "pglite" ? { dataDir: "memory://" } : { databaseUrl: await freshDatabaseUrl(), dataDir: "" },
    );
    await database.migrate();
  });
  afterAll(() => database?.close());

  it("migrates again as a no-op, also from two instances at once", async () => {
    await database.migrate();
    if (kind === "postgres") {
      const url = await freshDatabaseUrl();
      const [a, b] = await Promise.all([
        openDatabase({ databaseUrl: url, dataDir: "" }),
        openDatabase({ databaseUrl: url, dataDir: "" }),
      ]);
      await Promise.all([a.migrate(), b.migrate()]);
      expect(await a.ping()).toBe(true);
      await Promise.all([a.close(), b.close()]);
    }
  });

  it("creates, reads and updates an org", async () => {
    const org = await createOrg(database.db, { name: "acme", billingMode: "integrated", isTrial: true });
    expect(org.id).toMatch(/^org_[0-9A-Za-z]{24}$/);
    expect(org.subscriptionStatus).toBe("active");
    expect((await getOrg(database.db, org.id))?.name).toBe("acme");
    const updated = await updateOrgBilling(database.db, org.id, {
      maxThresholdPerMonth: 5_000_000_000,
      isTrial: false,
    });
    expect(updated?.maxThresholdPerMonth).toBe(5_000_000_000);
    expect(updated?.isTrial).toBe(false);
    expect(await getOrg(database.db, "org_missing")).toBeNull();
  });

  it("stores only a hash of a key, finds it by hash, and sees revocation", async () => {
    const org = await createOrg(database.db, { name: "k", billingMode: "byo", isTrial: false });
    const created = await createApiKey(database.db, org.id);
    expect(created?.key).toMatch(/^pk_[0-9A-Za-z]{40}$/);
    const found = await findApiKeyByHash(database.db, hashApiKey(created!.key));
    expect(found?.org.id).toBe(org.id);
    expect(found?.revokedAt).toBeNull();
    expect(await revokeApiKey(database.db, created!.id)).toBe(true);
    expect((await findApiKeyByHash(database.db, hashApiKey(created!.key)))?.revokedAt).toBeInstanceOf(Date);
    expect(await revokeApiKey(database.db, "key_missing")).toBe(false);
    expect(await createApiKey(database.db, "org_missing")).toBeNull();
  });

  it("deleting an org revokes every key at once", async () => {
    const org = await createOrg(database.db, { name: "d", billingMode: "integrated", isTrial: false });
    const keys = [await createApiKey(database.db, org.id), await createApiKey(database.db, org.id)];
    expect(await markOrgDeleted(database.db, org.id, new Date())).toBe(true);
    for (const k of keys)
      expect((await findApiKeyByHash(database.db, hashApiKey(k!.key)))?.revokedAt).not.toBeNull();
    expect(await markOrgDeleted(database.db, org.id, new Date())).toBe(false);
    expect(await createApiKey(database.db, org.id)).toBeNull();
  });
});
