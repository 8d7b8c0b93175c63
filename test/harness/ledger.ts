import type postgres from "postgres";
import { vi } from "vitest";
import type { TestGateway } from "./gateway.ts";

/**
 * A request's rows in the Postgres ledger: its usage record, waited for (a stream settles just after
 * its last byte went out, then the flusher writes it), and its debits (none for a call that moved no
 * money, never more than one).
 */
export async function ledgerRows(gw: TestGateway, sql: postgres.Sql, requestId: string) {
  const usage = await vi.waitUntil(
    async () => {
      await gw.services.flusher.drain();
      const [row] = await sql`select * from usage_records where id = ${requestId}`;
      return row;
    },
    { timeout: 10_000, interval: 20 },
  );
  const debits = await sql`select amount from credit_transactions where id = ${requestId}`;
  return { usage, debits: debits.map((d) => Number(d.amount)) };
}
