import { and, eq, isNull } from "drizzle-orm";
import type { Logger } from "../core/log.ts";
import type { Database } from "../db/client.ts";
import { orgs } from "../db/schema/orgs.ts";
import type { Nanos } from "../pricing/money.ts";
import { billingMonthStart } from "./billing-month.ts";
import type { Meter } from "./meter.ts";

/**
 * The id of an org's monthly grant: one per billing month. Every instance computes the same id, and
 * credits are idempotent by id, so the grant is given exactly once however many instances run the
 * job. A BYO→integrated switch gives that month's grant under the same id, as a `switch` credit.
 */
export function monthlyGrantId(orgId: string, monthStart: Date): string {
  return `grant_${orgId}_${monthStart.toISOString().slice(0, 10)}`;
}

/** Paid (not trial), integrated, active orgs get MONTHLY_GRANT at each billing-month start. */
export async function grantMonthlyCredits(deps: {
  database: Database;
  meter: Meter;
  log: Logger;
  now: number;
  amount: Nanos;
}): Promise<number> {
  const due = await deps.database.db
    .select({ id: orgs.id, anchor: orgs.billingCycleStartedAt })
    .from(orgs)
    .where(
      and(
        isNull(orgs.deletedAt),
        eq(orgs.isTrial, false),
        eq(orgs.billingMode, "integrated"),
        eq(orgs.subscriptionStatus, "active"),
      ),
    );
  let granted = 0;
  for (const org of due) {
    const month = billingMonthStart(org.anchor, new Date(deps.now));
    const result = await deps.meter.credit({
      orgId: org.id,
      id: monthlyGrantId(org.id, month),
      amount: deps.amount,
      creditType: "grant",
    });
    if (result.ok && !result.duplicate) {
      granted += 1;
      deps.log.info("monthly grant", { orgId: org.id, month: month.toISOString() });
    }
  }
  return granted;
}
